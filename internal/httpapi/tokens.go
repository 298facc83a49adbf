package httpapi

import (
	"sync"
	"time"

	"github.com/google/uuid"
)

// maxCachedTokens bounds the token cache; full, it starts over.
const maxCachedTokens = 10000

// tokenCache remembers for a while which user a token (its SHA-256) is:
// tokens are rows that no call of the API changes, and looking one up is a
// Postgres round trip on every request, as many as a small command's
// writes. Only tokens found are kept, so wrong tokens, looked up every
// time, cannot fill it. A token removed from the database by hand keeps
// working until its entry is ttl old.
type tokenCache struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[[32]byte]cachedUser
}

type cachedUser struct {
	id       uuid.UUID
	lookedUp time.Time
}

// newTokenCache makes a cache keeping entries for ttl; ttl ≤ 0 keeps none.
func newTokenCache(ttl time.Duration) *tokenCache {
	return &tokenCache{ttl: ttl, now: time.Now, entries: map[[32]byte]cachedUser{}}
}

func (c *tokenCache) get(hash []byte) (uuid.UUID, bool) {
	if c.ttl <= 0 || len(hash) != 32 {
		return uuid.UUID{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[[32]byte(hash)]
	if !ok || c.now().Sub(e.lookedUp) >= c.ttl {
		return uuid.UUID{}, false
	}
	return e.id, true
}

func (c *tokenCache) put(hash []byte, user uuid.UUID) {
	if c.ttl <= 0 || len(hash) != 32 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCachedTokens {
		clear(c.entries)
	}
	c.entries[[32]byte(hash)] = cachedUser{id: user, lookedUp: c.now()}
}
