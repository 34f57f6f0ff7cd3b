-- Model features of each order: the order, the customer's history at the start of the day,
-- and row-level features. The API endpoint runs this same file on each order it scores
-- (api_services/return_risk.yaml, feature_recipe: order_features).
SELECT
    o.order_id,
    o.placed_at,
    o.day,
    o.customer,
    o.category,
    o.delivery_lat,
    o.delivery_lon,
    o.price * o.quantity * (1 - o.discount_pct / 100) AS basket_value,
    o.quantity,
    o.discount_pct,
    o.express,
    hour(o.placed_at) AS placed_hour,
    dayofweek(o.placed_at) IN (0, 6) AS weekend,
    coalesce(h.segment, 'unknown') AS segment,
    h.orders_before,
    o.price * o.quantity / h.avg_spend_before AS basket_vs_usual,
    h.returns_before / nullif(h.orders_before, 0) AS return_rate_before,
    date_diff('day', h.signup_date, CAST(o.placed_at AS DATE)) AS tenure_days
FROM orders o
LEFT JOIN customer_history h ON h.customer = o.customer AND h.day = CAST(o.placed_at AS DATE)
