package httpapi

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/ops/operator"
	"github.com/catacloud/epoch/internal/platform/database"
)

// userHandler is a handler of an authenticated user's request.
type userHandler func(w http.ResponseWriter, r *http.Request, user uuid.UUID)

// authed resolves the bearer token to its user (401 when missing or
// unknown) before h runs, from the token cache when it can; a token that
// matched no user a moment ago is refused without a lookup.
func (s *server) authed(h userHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r)
		if !ok {
			writeError(w, errUnauthorized)
			return
		}
		hash := operator.TokenHash(token)
		if user, ok := s.tokens.get(hash); ok {
			h(w, r, user)
			return
		}
		if s.tokens.refused(hash) {
			writeError(w, errUnauthorized)
			return
		}
		ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
		defer cancel()
		user, err := s.op.UserByTokenHash(ctx, hash)
		if errors.Is(err, database.ErrNotFound) {
			s.tokens.refuse(hash)
			writeError(w, errUnauthorized)
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.tokens.put(hash, user)
		h(w, r, user)
	}
}

// bearer reads "Authorization: Bearer <token>".
func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

type userInput struct {
	Name *string `json:"name"`
}

// admin guards the calls for the admin token only: 403 while none is
// configured, 401 for any other token (a user's included).
func (s *server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AdminToken == "" {
			writeError(w, errForbidden)
			return
		}
		token, ok := bearer(r)
		if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.AdminToken)) != 1 {
			writeError(w, errUnauthorized)
			return
		}
		h(w, r)
	}
}

// createUser is POST /v1/users, for the admin token only. It takes no
// Idempotency-Key: its answer holds the token, which is never stored.
func (s *server) createUser(w http.ResponseWriter, r *http.Request) {
	_, in, err := readJSON[userInput](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name, err := requiredName(in.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	out, err := s.op.CreateUser(ctx, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

// rotateToken is POST /v1/admin/users/{id}/token, for the admin token only:
// the user gets a new token and the old one stops working, on every api
// process within moments (tokensChannel).
func (s *server) rotateToken(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	user, err := s.op.RotateToken(ctx, id)
	if err != nil {
		s.fail(w, r, notFoundSays(err, "no such user"))
		return
	}
	// This process need not wait for its own notification.
	s.tokens.forget(user.ID)
	writeJSON(w, http.StatusOK, user)
}
