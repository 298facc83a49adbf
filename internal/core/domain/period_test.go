package domain_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
)

func TestParsePeriod(t *testing.T) {
	t.Parallel()
	from, to, err := domain.ParsePeriod("2026-01-01T00:00:00+01:00", "2026-01-02T00:00:00.1234567Z")
	require.NoError(t, err)
	require.Equal(t, time.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC), from)
	require.Equal(t, time.Date(2026, 1, 2, 0, 0, 0, 123456000, time.UTC), to)

	_, _, err = domain.ParsePeriod("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
	require.NoError(t, err, "an empty period is valid")
	from, to, err = domain.ParsePeriod("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.9999999Z")
	require.NoError(t, err, "the edges of years 0001–9999")
	require.Equal(t, time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), from)
	require.Equal(t, time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), to)
	for _, c := range [][2]string{
		{"", "2026-01-01T00:00:00Z"},
		{"2026-01-01T00:00:00Z", ""},
		{"2026-01-01", "2026-01-02"},
		{"yesterday", "2026-01-01T00:00:00Z"},
		{"2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"},
		{"0000-01-01T00:00:00+01:00", "2026-01-01T00:00:00Z"},
		{"0000-12-31T23:00:00Z", "2026-01-01T00:00:00Z"},
		{"0001-01-01T00:30:00+01:00", "2026-01-01T00:00:00Z"},
		{"2026-01-01T00:00:00Z", "9999-12-31T23:00:00-05:00"},
	} {
		_, _, err := domain.ParsePeriod(c[0], c[1])
		require.ErrorIs(t, err, domain.ErrInvalidPeriod, "%q", c)
	}
}
