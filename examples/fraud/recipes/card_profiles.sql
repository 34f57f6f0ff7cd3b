-- A card's profile as of the start of each day: only transactions of EARLIER days count,
-- so a profile can be computed before the day's first transaction arrives. One row per
-- card and as-of day, for every day with transactions and the day after the last one
-- (the profile the real-time API uses for today's transactions).
WITH daily AS (
    SELECT card_id, CAST(ts AS DATE) AS tx_day, count(*) AS n, sum(amount) AS total
    FROM transactions
    GROUP BY ALL
),
as_of_days AS (
    SELECT DISTINCT tx_day AS day FROM daily
    UNION
    SELECT max(tx_day) + 1 AS day FROM daily
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
        coalesce(sum(n) OVER before_today, 0) AS card_txn_history,
        sum(total) OVER before_today / nullif(sum(n) OVER before_today, 0) AS card_avg_amount,
        coalesce(sum(n) OVER yesterday, 0) AS card_txn_prev_day,
        coalesce(sum(n) OVER last_week, 0) AS card_txn_prev_7d
    FROM grid
    WINDOW
        before_today AS (PARTITION BY card_id ORDER BY day
                         RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL 1 DAY PRECEDING),
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
    h.card_txn_history,
    h.card_avg_amount,
    h.card_txn_prev_day,
    h.card_txn_prev_7d
FROM history h
JOIN cards c USING (card_id)
