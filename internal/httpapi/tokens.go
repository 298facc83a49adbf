package httpapi

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// maxCachedTokens bounds each of the token cache's maps; full, one starts
// over.
const maxCachedTokens = 10000

// failedLoginTTL is how long a token that matched no user is answered 401
// without a lookup. Tokens are 256 random bits, so none handed out later
// can be one that was refused: the entry can only save lookups.
const failedLoginTTL = time.Minute

// tokensChannel is the NOTIFY channel on which a token rotation names the
// user whose old token must be forgotten (queries/user.sql, UserRotateToken).
const tokensChannel = "epoch_tokens"

// tokenCache remembers for a while which user a token (its SHA-256) is, and
// which tokens are no one's: looking one up is a Postgres round trip on
// every request, as many as a small command's writes, and a caller trying
// tokens could otherwise make every try cost one. A rotation drops the
// user's entries on every api process through tokensChannel; the cache is
// used only while that channel is heard (live), so an entry is never
// trusted while a rotation could go unnoticed. A token removed from the
// database by hand keeps working until its entry is ttl old.
type tokenCache struct {
	ttl  time.Duration
	now  func() time.Time
	live atomic.Bool

	mu      sync.Mutex
	entries map[[32]byte]cachedUser
	failed  map[[32]byte]time.Time // tokens that matched no user, when looked up
}

type cachedUser struct {
	id       uuid.UUID
	lookedUp time.Time
}

// newTokenCache makes a live cache keeping entries for ttl; ttl ≤ 0 keeps
// none.
func newTokenCache(ttl time.Duration) *tokenCache {
	c := &tokenCache{ttl: ttl, now: time.Now, entries: map[[32]byte]cachedUser{}, failed: map[[32]byte]time.Time{}}
	c.live.Store(true)
	return c
}

func (c *tokenCache) get(hash []byte) (uuid.UUID, bool) {
	if c.ttl <= 0 || len(hash) != 32 || !c.live.Load() {
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

// refused reports whether hash matched no user less than failedLoginTTL ago.
func (c *tokenCache) refused(hash []byte) bool {
	if len(hash) != 32 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.failed[[32]byte(hash)]
	return ok && c.now().Sub(at) < failedLoginTTL
}

// refuse remembers that hash matched no user.
func (c *tokenCache) refuse(hash []byte) {
	if len(hash) != 32 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.failed) >= maxCachedTokens {
		clear(c.failed)
	}
	c.failed[[32]byte(hash)] = c.now()
}

// forget drops every entry of user (its token was rotated).
func (c *tokenCache) forget(user uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, e := range c.entries {
		if e.id == user {
			delete(c.entries, h)
		}
	}
}

// setLive turns the cache on (the rotation channel is heard again: what was
// kept may predate a missed rotation, so it starts empty) or off.
func (c *tokenCache) setLive(live bool) {
	if live {
		c.mu.Lock()
		clear(c.entries)
		c.mu.Unlock()
	}
	c.live.Store(live)
}
