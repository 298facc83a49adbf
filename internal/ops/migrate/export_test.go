package migrate

import (
	"context"
	"io/fs"
	"math"

	"github.com/jackc/pgx/v5/pgxpool"
)

// UpFS is Up for the migrations of fsys: tests apply files of their own
// through the same goose set-up as the schema's.
func UpFS(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) (int, error) {
	return upTo(ctx, pool, fsys, math.MaxInt64)
}

// PendingFS is Pending for the migrations of fsys.
func PendingFS(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) (int, error) {
	return pending(ctx, pool, fsys)
}
