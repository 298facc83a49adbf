-- name: UserInsert :exec
-- Users are plain rows, not events; only a SHA-256 of the token is kept.
INSERT INTO users (id, name, token_hash) VALUES (@id, @name, @token_hash);

-- name: UserIDByTokenHash :one
SELECT id FROM users WHERE token_hash = @token_hash;

-- name: UserRotateToken :one
-- Gives a user a new token. The NOTIFY (channel epoch_tokens, the user's id
-- as payload) goes out with the commit: every api process drops the user's
-- cached token on it, so the old one answers 401 everywhere at once.
WITH rotated AS (
    UPDATE users SET token_hash = @token_hash WHERE id = @id RETURNING id, name
), announced AS (
    SELECT pg_notify('epoch_tokens', rotated.id::text) FROM rotated
)
SELECT rotated.id, rotated.name FROM rotated
WHERE (SELECT count(*) FROM announced) >= 0;
