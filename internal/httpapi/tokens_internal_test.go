package httpapi

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func hashOf(i int) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	h := sha256.Sum256(b[:])
	return h[:]
}

// The cache holds at most maxCachedTokens entries (full, it starts over)
// and forgets an entry once it is ttl old.
func TestTokenCacheBounds(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newTokenCache(time.Minute)
	c.now = func() time.Time { return now }
	user := uuid.New()
	for i := range maxCachedTokens {
		c.put(hashOf(i), user)
	}
	got, ok := c.get(hashOf(0))
	require.True(t, ok)
	require.Equal(t, user, got)
	c.put(hashOf(maxCachedTokens), user)
	require.Len(t, c.entries, 1, "a full cache did not start over")
	_, ok = c.get(hashOf(maxCachedTokens))
	require.True(t, ok)

	now = now.Add(time.Minute)
	_, ok = c.get(hashOf(maxCachedTokens))
	require.False(t, ok, "an entry ttl old was still used")

	off := newTokenCache(-1)
	off.put(hashOf(1), user)
	_, ok = off.get(hashOf(1))
	require.False(t, ok)
}
