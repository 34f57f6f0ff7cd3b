-- A card's profile as of the start of each day, from its transactions of the 30 days
-- before that day. flow.yaml reads them as `transactions: {days_before: 30}`: the build of
-- day D reads days D-30 … D-1 only (never D itself nor a later day), so a day's build costs
-- the same after a year as after a month, and rebuilding an old day gives what it gave then.
-- Bounded windows only: a lifetime count grows every day by construction, and a model that
-- uses one sees its scores drift on perfectly stable data. The 30-day activity is a rate
-- (transactions a day over the days of data the window covers: fewer than 30 in the first
-- month of data), so it does not grow while the first month of history fills either.
-- One row per card and as-of day: every day with transactions and every day after one (so
-- the day after the last, the profile the real-time API uses for today's transactions). A
-- day that follows a day with no transaction at all gets no profile (its features then
-- carry NULL profile columns; the data checks flag a missing day).
WITH daily AS (
    SELECT card_id, CAST(ts AS DATE) AS tx_day, count(*) AS n, sum(amount) AS total
    FROM transactions
    GROUP BY ALL
),
as_of_days AS (
    SELECT DISTINCT tx_day AS day FROM daily
    UNION
    SELECT DISTINCT tx_day + 1 AS day FROM daily
),
data_start AS (  -- the first day of data the window sees (D-30 once there is history)
    SELECT min(tx_day) AS first_day FROM daily
),
grid AS (
    SELECT c.card_id, d.day, coalesce(x.n, 0) AS n, coalesce(x.total, 0) AS total
    FROM cards c
    CROSS JOIN as_of_days d
    LEFT JOIN daily x ON x.card_id = c.card_id AND x.tx_day = d.day
),
history AS (
    SELECT
        card_id,
        day,
        coalesce(sum(n) OVER last_30d, 0) AS txn_30d,
        sum(total) OVER last_30d / nullif(sum(n) OVER last_30d, 0) AS card_avg_amount,
        coalesce(sum(n) OVER yesterday, 0) AS card_txn_prev_day,
        coalesce(sum(n) OVER last_week, 0) AS card_txn_prev_7d
    FROM grid
    WINDOW
        last_30d AS (PARTITION BY card_id ORDER BY day
                     RANGE BETWEEN INTERVAL 30 DAY PRECEDING AND INTERVAL 1 DAY PRECEDING),
        yesterday AS (PARTITION BY card_id ORDER BY day
                      RANGE BETWEEN INTERVAL 1 DAY PRECEDING AND INTERVAL 1 DAY PRECEDING),
        last_week AS (PARTITION BY card_id ORDER BY day
                      RANGE BETWEEN INTERVAL 7 DAY PRECEDING AND INTERVAL 1 DAY PRECEDING)
)
SELECT
    h.card_id,
    h.day,
    c.home_latitude,
    c.home_longitude,
    c.credit_score,
    c.account_open_date,
    -- transactions a day over the last 30 days (or the days of data there are, if fewer)
    h.txn_30d / nullif(least(30, date_diff('day', s.first_day, h.day)), 0) AS card_txn_rate_30d,
    h.card_avg_amount,
    h.card_txn_prev_day,
    h.card_txn_prev_7d
FROM history h
JOIN cards c USING (card_id)
CROSS JOIN data_start s
