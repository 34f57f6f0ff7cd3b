-- Orders whose outcome is known for sure: placed at least 14 days (the return window)
-- before the newest known outcome, so recent days do not bring only their early returns.
SELECT f.*, r.was_returned
FROM order_features f
JOIN returns r ON r.order_id = f.order_id
WHERE f.day <= (SELECT max(day) FROM returns) - INTERVAL 14 DAY
