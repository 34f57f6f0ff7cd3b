-- Labelled transactions only: labels arrive days after the transaction (chargebacks).
SELECT f.*, l.is_fraud
FROM features f
JOIN labels l ON l.transaction_id = f.transaction_id
