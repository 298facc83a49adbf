-- name: UserInsert :exec
-- Users are plain rows, not events; only a SHA-256 of the token is kept.
INSERT INTO users (id, name, token_hash) VALUES (@id, @name, @token_hash);

-- name: UserIDByTokenHash :one
SELECT id FROM users WHERE token_hash = @token_hash;
