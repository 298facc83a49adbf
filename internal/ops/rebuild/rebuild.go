// Package rebuild recomputes a subscriber's rows (a remote subscriber's, or
// the inline projections') from the event store alone, beside the live ones,
// compares them, and on request swaps them in: the repair for rows a bug or
// a hand corrupted.
//
// It works in a schema of its own holding empty copies of the target's
// tables, and replays into them, through the subscriber's own code
// (search_path puts the copies first), exactly the events the live side
// has applied (Target.Applied), noting each in the schema's applied list.
// The bulk of that runs in short transactions, page by page: events never
// change, and a long writing transaction would hold back every relay (they
// claim no outbox row past the oldest open one). Then one short transaction
// catches up with what the live side applied meanwhile and compares, in one
// REPEATABLE READ snapshot; a swap does the same with the live tables
// locked against writers (reads go on) and rewrites the rows that differ.
// Deliveries and commands go on throughout; reads see the live rows. The
// statements are built here, not in queries/: they name the schema and the
// tables they are given.
package rebuild

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/operations"
)

// Target is what a rebuild recomputes.
type Target struct {
	// Tables are the live tables the target's code writes (in public).
	Tables []string
	// Apply applies events as the live side does, writing the tables by
	// their unqualified names.
	Apply func(ctx context.Context, tx *database.Tx, events []eventstore.Event) error
	// Applied selects the positions of the events the live side has applied
	// (a query over public tables, with AppliedArgs).
	Applied     string
	AppliedArgs []any
	// Settle, when set, brings the tables (found by their unqualified
	// names) to their settled form before they are compared: the copies',
	// then the live ones, in the transaction that compares, which then
	// locks the live tables against writers before it reads anything.
	Settle func(ctx context.Context, tx *database.Tx) error
}

// Projections is a Target's Applied for the inline projections: every
// committed event, since they are written in the command's transaction.
const Projections = `SELECT position FROM public.events`

// Subscriber is a Target's Applied for a deduplicated subscriber ($1 its
// name, $2 its event types): its inbox, and every event of its types at or
// below its watermark (whose inbox rows may be pruned).
const Subscriber = `SELECT position FROM public.inbox WHERE subscriber = $1
UNION
SELECT position FROM public.events
WHERE type = ANY($2::text[])
  AND position <= coalesce((SELECT applied_through FROM public.inbox_watermarks WHERE subscriber = $1), 0)`

// pageSize is how many events one replay statement reads.
const pageSize = 5000

// defaultTimeout bounds dropping the schema after the rebuild.
const defaultTimeout = 30 * time.Second

// Run rebuilds t and reports the rows that differ from the live ones (by
// primary key). With swap it then makes the live rows equal to the rebuilt
// ones, and the differences are those it rewrote.
func Run(ctx context.Context, pool *pgxpool.Pool, t Target, swap bool, progress *operations.Progress) error {
	if len(t.Tables) == 0 || t.Apply == nil || t.Applied == "" {
		return errors.New("rebuild: Tables, Apply and Applied are required")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "rebuild_" + hex.EncodeToString(b[:])
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultTimeout)
		defer cancel()
		_, _ = pool.Exec(dctx, "DROP SCHEMA IF EXISTS "+ident(schema)+" CASCADE")
	}()
	keys, err := primaryKeys(ctx, pool, t.Tables)
	if err != nil {
		return err
	}

	if err := database.InTx(ctx, pool, func(tx *database.Tx) error { return createCopies(ctx, tx, schema, t.Tables) }); err != nil {
		return err
	}
	// The bulk, twice: the second round takes what landed during the first,
	// so the round in one snapshot below has little left to do.
	for range 2 {
		if err := database.InTx(ctx, pool, func(tx *database.Tx) error { return markPending(ctx, tx, schema, t) }); err != nil {
			return err
		}
		if err := replayPending(ctx, pool, schema, t, progress); err != nil {
			return err
		}
	}
	var differences int64
	var err2 error
	if !swap {
		err2 = database.InTxWith(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx *database.Tx) (err error) {
			if t.Settle != nil {
				// Settling writes the live rows: the snapshot is taken after
				// the lock, so no writer's change can come between them.
				if err := lockLive(ctx, tx, t.Tables); err != nil {
					return err
				}
			}
			differences, err = catchUpAndCompare(ctx, tx, schema, t, keys, progress)
			return err
		})
	} else {
		for attempt := 1; ; attempt++ {
			differences, err2 = swapIn(ctx, pool, schema, t, keys, progress)
			// Writers that hold a live table and wait for another may
			// deadlock with the lock taken here: the loser retries.
			if err2 == nil || !database.IsTransient(err2) || attempt == 5 {
				break
			}
		}
	}
	if err2 != nil {
		return err2
	}
	progress.Differences(int(differences))
	return nil
}

// swapIn is the last step of a swap: with the live tables locked against
// writers, the copies catch up with what the live side applied, and the
// live rows that differ are rewritten. It returns how many did.
func swapIn(ctx context.Context, pool *pgxpool.Pool, schema string, t Target, keys map[string][]string, progress *operations.Progress) (int64, error) {
	var differences int64
	err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		if err := lockLive(ctx, tx, t.Tables); err != nil {
			return err
		}
		var err error
		if differences, err = catchUpAndCompare(ctx, tx, schema, t, keys, progress); err != nil || differences == 0 {
			return err
		}
		return repair(ctx, tx, schema, t.Tables, keys)
	})
	return differences, err
}

// lockLive locks the live tables against writers (reads go on) for the
// rest of tx.
func lockLive(ctx context.Context, tx *database.Tx, tables []string) error {
	live := make([]string, len(tables))
	for i, table := range tables {
		live[i] = "public." + ident(table)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(live, ", ")+" IN EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("rebuild: lock: %w", err)
	}
	return nil
}

// catchUpAndCompare replays, in tx, what the live side applied that the
// copies lack, and compares: in one snapshot, so the live rows and the list
// of what the live side applied agree.
func catchUpAndCompare(ctx context.Context, tx *database.Tx, schema string, t Target, keys map[string][]string, progress *operations.Progress) (int64, error) {
	if err := markPending(ctx, tx, schema, t); err != nil {
		return 0, err
	}
	if err := replayAll(ctx, tx, schema, t, progress); err != nil {
		return 0, err
	}
	if err := settlePending(ctx, tx, schema); err != nil {
		return 0, err
	}
	if t.Settle != nil {
		// The copies first: the replay put them first on the search_path.
		if err := t.Settle(ctx, tx); err != nil {
			return 0, fmt.Errorf("rebuild: settle the copies: %w", err)
		}
		if _, err := tx.Exec(ctx, "SELECT set_config('search_path', 'public', true)"); err != nil {
			return 0, fmt.Errorf("rebuild: search_path: %w", err)
		}
		if err := t.Settle(ctx, tx); err != nil {
			return 0, fmt.Errorf("rebuild: settle the live tables: %w", err)
		}
	}
	return compare(ctx, tx, schema, t.Tables, keys)
}

// markPending lists in the schema's pending table what the live side has
// applied and the copies have not.
func markPending(ctx context.Context, tx *database.Tx, schema string, t Target) error {
	s := ident(schema)
	if _, err := tx.Exec(ctx, "INSERT INTO "+s+".pending SELECT position FROM ("+t.Applied+") a EXCEPT SELECT position FROM "+s+".applied", t.AppliedArgs...); err != nil {
		return fmt.Errorf("rebuild: what the live side applied: %w", err)
	}
	return nil
}

// replayPending replays the pending events page by page, each page in a
// transaction of its own, then moves them to the applied list.
func replayPending(ctx context.Context, pool *pgxpool.Pool, schema string, t Target, progress *operations.Progress) error {
	var after int64
	for {
		var last int64
		err := database.InTx(ctx, pool, func(tx *database.Tx) (err error) {
			last, err = replayOne(ctx, tx, schema, t, after, progress)
			return err
		})
		if err != nil {
			return err
		}
		if last == 0 {
			return database.InTx(ctx, pool, func(tx *database.Tx) error { return settlePending(ctx, tx, schema) })
		}
		after = last
	}
}

// replayAll replays every pending event in tx, page by page.
func replayAll(ctx context.Context, tx *database.Tx, schema string, t Target, progress *operations.Progress) error {
	var after int64
	for {
		last, err := replayOne(ctx, tx, schema, t, after, progress)
		if err != nil || last == 0 {
			return err
		}
		after = last
	}
}

// settlePending moves the pending positions to the applied list.
func settlePending(ctx context.Context, tx *database.Tx, schema string) error {
	s := ident(schema)
	for _, stmt := range []string{"INSERT INTO " + s + ".applied SELECT position FROM " + s + ".pending", "TRUNCATE " + s + ".pending"} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("rebuild: %s: %w", stmt, err)
		}
	}
	return nil
}

// createCopies makes the schema, an empty copy of each table (columns,
// defaults, constraints, indexes), and the applied list.
func createCopies(ctx context.Context, tx *database.Tx, schema string, tables []string) error {
	s := ident(schema)
	stmts := []string{"CREATE SCHEMA " + s, "CREATE TABLE " + s + ".applied (position bigint PRIMARY KEY)",
		"CREATE TABLE " + s + ".pending (position bigint PRIMARY KEY)"}
	for _, table := range tables {
		stmts = append(stmts, "CREATE TABLE "+s+"."+ident(table)+" (LIKE public."+ident(table)+" INCLUDING ALL)")
	}
	for _, stmt := range stmts {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("rebuild: %s: %w", stmt, err)
		}
	}
	return nil
}

// replayOne applies, in tx, one page of the pending events after position
// after, in position order, to the copies (search_path puts them before
// public for the rest of the transaction), and returns the last position
// it applied (0: none left).
func replayOne(ctx context.Context, tx *database.Tx, schema string, t Target, after int64, progress *operations.Progress) (int64, error) {
	s := ident(schema)
	if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", s+", public"); err != nil {
		return 0, fmt.Errorf("rebuild: search_path: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT e.position, e.id, e.stream_type, e.stream_id, e.version, e.type, e.data, e.occurred_at
FROM public.events e JOIN `+s+`.pending p ON p.position = e.position
WHERE e.position > $1 ORDER BY e.position LIMIT $2`, after, pageSize)
	if err != nil {
		return 0, fmt.Errorf("rebuild: read events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (eventstore.Event, error) {
		var e eventstore.Event
		err := r.Scan(&e.Position, &e.ID, &e.StreamType, &e.StreamID, &e.Version, &e.Type, &e.Data, &e.OccurredAt)
		return e, err
	})
	if err != nil {
		return 0, fmt.Errorf("rebuild: read events: %w", err)
	}
	if len(events) == 0 {
		return 0, nil
	}
	if err := t.Apply(ctx, tx, events); err != nil {
		return 0, fmt.Errorf("rebuild: apply: %w", err)
	}
	progress.Applied(len(events))
	return events[len(events)-1].Position, nil
}

// compare counts the keys whose rows differ between the copies and the
// live tables: missing on one side, or with other values.
func compare(ctx context.Context, tx *database.Tx, schema string, tables []string, keys map[string][]string) (int64, error) {
	var total int64
	for _, table := range tables {
		copyT, liveT, k := ident(schema)+"."+ident(table), "public."+ident(table), strings.Join(keys[table], ", ")
		var n int64
		err := tx.QueryRow(ctx, `SELECT count(*) FROM (
    SELECT `+k+` FROM (SELECT * FROM `+copyT+` EXCEPT SELECT * FROM `+liveT+`) a
    UNION
    SELECT `+k+` FROM (SELECT * FROM `+liveT+` EXCEPT SELECT * FROM `+copyT+`) b) d`).Scan(&n)
		if err != nil {
			return 0, fmt.Errorf("rebuild: compare %s: %w", table, err)
		}
		total += n
	}
	return total, nil
}

// repair rewrites the live rows that differ from the copies.
func repair(ctx context.Context, tx *database.Tx, schema string, tables []string, keys map[string][]string) error {
	for _, table := range tables {
		copyT, liveT, k := ident(schema)+"."+ident(table), "public."+ident(table), strings.Join(keys[table], ", ")
		if _, err := tx.Exec(ctx, `DELETE FROM `+liveT+` WHERE (`+k+`) IN (
    SELECT `+k+` FROM (SELECT * FROM `+liveT+` EXCEPT SELECT * FROM `+copyT+`) b)`); err != nil {
			return fmt.Errorf("rebuild: repair %s: %w", table, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+liveT+` SELECT * FROM (SELECT * FROM `+copyT+` EXCEPT SELECT * FROM `+liveT+`) a`); err != nil {
			return fmt.Errorf("rebuild: repair %s: %w", table, err)
		}
	}
	return nil
}

// primaryKeys reads each table's primary key columns from the catalog.
func primaryKeys(ctx context.Context, db database.DBTX, tables []string) (map[string][]string, error) {
	keys := make(map[string][]string, len(tables))
	for _, table := range tables {
		rows, err := db.Query(ctx, `SELECT a.attname
FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = ('public.' || quote_ident($1))::regclass AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum)`, table)
		if err != nil {
			return nil, fmt.Errorf("rebuild: primary key of %s: %w", table, err)
		}
		cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("rebuild: primary key of %s: %w", table, err)
		}
		if len(cols) == 0 {
			return nil, fmt.Errorf("rebuild: %s has no primary key", table)
		}
		for i, c := range cols {
			cols[i] = ident(c)
		}
		keys[table] = cols
	}
	return keys, nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }
