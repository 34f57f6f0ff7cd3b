-- Model features of each transaction: the raw fields, the card's profile at the start of
-- the day, the card's activity strictly before it (card_windows), and row-level features. The API endpoint runs this same file on each request
-- (feature_recipe: features in api_services/fraud_detection.yaml, compiled for real time
-- and checked against batch on the project's rows when a package is built and loaded).
SELECT
    t.transaction_id,
    t.ts,
    t.day,
    t.card_id,
    t.merchant_id,
    t.merchant_category,
    t.amount,
    t.channel,
    t.card_present,
    t.merchant_latitude,
    t.merchant_longitude,
    hour(t.ts) AS hour_of_day,
    -- haversine distance between the card holder's home and the merchant, in km
    2 * 6371.0088 * asin(sqrt(
        pow(sin(radians(t.merchant_latitude - p.home_latitude) / 2), 2)
        + cos(radians(p.home_latitude)) * cos(radians(t.merchant_latitude))
          * pow(sin(radians(t.merchant_longitude - p.home_longitude) / 2), 2)
    )) AS distance_km,
    t.amount / p.card_avg_amount AS amount_ratio,
    p.card_txn_prev_day,
    p.card_txn_prev_7d,
    p.card_txn_rate_30d,
    p.credit_score,
    date_diff('day', p.account_open_date, CAST(t.ts AS DATE)) AS account_age_days,
    -- the card's activity strictly before this transaction (recipes/card_windows.yaml; in
    -- real time computed from the API nodes' shared online state)
    w.card_txn_1h,
    w.card_amount_1h,
    w.card_txn_24h,
    w.card_amount_24h,
    w.card_seconds_since_last / 60.0 AS card_minutes_since_last,
    CAST(w.card_new_merchant_7d AS INTEGER) AS card_new_merchant_7d
FROM transactions t
LEFT JOIN card_profiles p ON p.card_id = t.card_id AND p.day = CAST(t.ts AS DATE)
LEFT JOIN card_windows w ON w.transaction_id = t.transaction_id
