-- A customer's history as of the start of each day: only EARLIER orders count, and only
-- outcomes known before that day. One row per customer and as-of day, for every day with
-- orders and the day after the last one (what the real-time API uses for today's orders).
WITH daily AS (
    SELECT customer, CAST(placed_at AS DATE) AS order_day, count(*) AS n,
           sum(price * quantity) AS spend
    FROM orders
    GROUP BY ALL
),
known AS (
    SELECT o.customer, r.day AS known_day, sum(r.was_returned) AS n_returned
    FROM returns r
    JOIN orders o USING (order_id)
    GROUP BY ALL
),
as_of_days AS (
    SELECT DISTINCT order_day AS day FROM daily
    UNION
    SELECT max(order_day) + 1 AS day FROM daily
),
grid AS (
    SELECT c.customer, d.day, coalesce(x.n, 0) AS n, coalesce(x.spend, 0) AS spend,
           coalesce(k.n_returned, 0) AS n_returned
    FROM customers c
    CROSS JOIN as_of_days d
    LEFT JOIN daily x ON x.customer = c.customer AND x.order_day = d.day
    LEFT JOIN known k ON k.customer = c.customer AND k.known_day = d.day
)
SELECT
    g.customer,
    g.day,
    c.segment,
    c.signup_date,
    coalesce(sum(g.n) OVER before_today, 0) AS orders_before,
    sum(g.spend) OVER before_today / nullif(sum(g.n) OVER before_today, 0) AS avg_spend_before,
    coalesce(sum(g.n_returned) OVER before_today, 0) AS returns_before
FROM grid g
JOIN customers c USING (customer)
WINDOW before_today AS (PARTITION BY g.customer ORDER BY g.day
                        RANGE BETWEEN UNBOUNDED PRECEDING AND INTERVAL 1 DAY PRECEDING)
