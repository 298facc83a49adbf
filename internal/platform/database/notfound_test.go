package database_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/platform/database"
)

// A read that found no row is the one not-found, wrapped or not; other
// errors, and no error, pass through.
func TestNotFound(t *testing.T) {
	t.Parallel()
	require.Equal(t, database.ErrNotFound, database.NotFound(pgx.ErrNoRows))
	require.Equal(t, database.ErrNotFound, database.NotFound(fmt.Errorf("get job: %w", pgx.ErrNoRows)))
	require.NoError(t, database.NotFound(nil))
	other := errors.New("connection reset")
	require.Equal(t, other, database.NotFound(other))
}
