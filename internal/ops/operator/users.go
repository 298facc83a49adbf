package operator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// User is a user with its token, as created or rotated: the token is
// handed out once and only its hash is kept.
type User struct {
	ID    uuid.UUID `json:"id"`
	Name  string    `json:"name"`
	Token string    `json:"token"`
}

// CreateUser creates a user named name with a fresh token.
func (o *Operator) CreateUser(ctx context.Context, name string) (User, error) {
	u := User{ID: uuid.New(), Name: name, Token: newToken()}
	err := dbsqlc.New().UserInsert(ctx, o.cfg.Pool, &dbsqlc.UserInsertParams{ID: u.ID, Name: name, TokenHash: TokenHash(u.Token)})
	if database.IsUniqueViolation(err, "") {
		// 2^-256: a collision of random tokens or ids is not worth a retry loop.
		err = errors.New("create user: token or id collision")
	}
	return u, err
}

// RotateToken gives user id a new token; the old one stops working
// (database.ErrNotFound when there is no such user). Whoever caches
// tokens learns it from the rotation's NOTIFY.
func (o *Operator) RotateToken(ctx context.Context, id uuid.UUID) (User, error) {
	token := newToken()
	user, err := dbsqlc.New().UserRotateToken(ctx, o.cfg.Pool, &dbsqlc.UserRotateTokenParams{ID: id, TokenHash: TokenHash(token)})
	if err != nil {
		return User{}, database.NotFound(err)
	}
	return User{ID: user.ID, Name: user.Name, Token: token}, nil
}

// UserByTokenHash finds the user whose token hashes to hash
// (database.ErrNotFound when none does).
func (o *Operator) UserByTokenHash(ctx context.Context, hash []byte) (uuid.UUID, error) {
	user, err := dbsqlc.New().UserIDByTokenHash(ctx, o.cfg.Pool, hash)
	return user, database.NotFound(err)
}

// TokenHash is what is kept of a token: its SHA-256.
func TokenHash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// newToken is 32 random bytes, base64url without padding.
func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}
