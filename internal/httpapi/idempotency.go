package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/platform/canonjson"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// answer is a command's successful response, kept whole so an
// Idempotency-Key can replay it.
type answer struct {
	Status int
	Header map[string]string // Epoch-Position, ETag, Content-Type, Location
	Body   []byte
}

func (a answer) write(w http.ResponseWriter) {
	for k, v := range a.Header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.Status)
	_, _ = w.Write(a.Body)
}

// jsonAnswer builds an answer with a JSON body.
func jsonAnswer(status int, v any, header map[string]string) (answer, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return answer{}, fmt.Errorf("encode answer: %w", err)
	}
	if header == nil {
		header = map[string]string{}
	}
	header["Content-Type"] = "application/json"
	return answer{Status: status, Header: header, Body: append(b, '\n')}, nil
}

// commandFunc runs one command in tx and says how to read its answer. It
// may run more than once (Run retries on conflicts), so it must not keep
// state between runs.
type commandFunc func(ctx context.Context, tx *database.Tx) (readAnswer, error)

// readAnswer reads a command's answer with db: in the command's
// transaction, with its COMMIT (Tx.ReadAtCommit), or before the COMMIT
// when the answer is stored with an Idempotency-Key.
type readAnswer func(ctx context.Context, db database.DBTX) (answer, error)

// ready is the readAnswer of an answer already in hand.
func ready(a answer) readAnswer {
	return func(context.Context, database.DBTX) (answer, error) { return a, nil }
}

// errKeyTaken: a concurrent request stored the same key first (possible
// only if the lock below did not serialise us); Run runs the command again
// to replay it.
var errKeyTaken = fmt.Errorf("idempotency key stored concurrently: %w", command.ErrConflict)

// runCommand runs fn in one transaction with the request's Idempotency-Key
// handled in that same transaction: a stored answer for the same request is
// replayed and nothing is written; one for another request is a 409; else
// fn runs and its answer is stored before commit. A failed command stores
// nothing, so its retry is judged afresh.
func (s *server) runCommand(w http.ResponseWriter, r *http.Request, user uuid.UUID, body []byte, fn commandFunc) {
	key, err := parseIdempotencyKey(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	hash := requestHash(r, body)
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()

	var ans answer
	err = s.cfg.Commands.Run(ctx, func(tx *database.Tx) error {
		return s.commandOnce(ctx, tx, user, key, hash, fn, &ans)
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ans.write(w)
}

// commandOnce runs fn once in tx, its answer to be in *ans once tx
// committed. Without a key the answer is read with the COMMIT
// (Tx.ReadAtCommit); with one it is read first (one round trip more), to
// be stored before the COMMIT.
func (s *server) commandOnce(ctx context.Context, tx *database.Tx, user uuid.UUID, key string, hash []byte, fn commandFunc, ans *answer) error {
	if key == "" {
		read, err := fn(ctx, tx)
		if err != nil {
			return err
		}
		tx.ReadAtCommit(func(db database.DBTX) (err error) {
			*ans, err = read(ctx, db)
			return err
		})
		return nil
	}
	q := dbsqlc.New()
	if err := q.IdempotencyLock(ctx, tx, user.String()+"/"+key); err != nil {
		return fmt.Errorf("idempotency lock: %w", err)
	}
	stored, err := q.IdempotencyGet(ctx, tx, &dbsqlc.IdempotencyGetParams{UserID: user, Key: key})
	switch err = database.NotFound(err); {
	case err == nil:
		if !bytes.Equal(stored.RequestHash, hash) {
			return errKeyReused
		}
		*ans = answer{Status: int(stored.Status), Body: stored.Body}
		if err := json.Unmarshal(stored.Headers, &ans.Header); err != nil {
			return fmt.Errorf("idempotency headers: %w", err)
		}
		return nil
	case !errors.Is(err, database.ErrNotFound):
		return fmt.Errorf("idempotency get: %w", err)
	}

	read, err := fn(ctx, tx)
	if err != nil {
		return err
	}
	if *ans, err = read(ctx, tx); err != nil {
		return err
	}
	headers, err := json.Marshal(ans.Header)
	if err != nil {
		return fmt.Errorf("idempotency headers: %w", err)
	}
	if ans.Body == nil {
		ans.Body = []byte{} // body is NOT NULL; a 204 has none
	}
	n, err := q.IdempotencyStore(ctx, tx, &dbsqlc.IdempotencyStoreParams{
		UserID: user, Key: key, RequestHash: hash, Status: int32(ans.Status), Headers: headers, Body: ans.Body,
	})
	if err != nil {
		return fmt.Errorf("idempotency store: %w", err)
	}
	if n == 0 {
		return errKeyTaken
	}
	return nil
}

// requestHash identifies a request for its key: method, path and the body
// as canonical JSON, so a retry that spaces or orders the same JSON
// otherwise is the same request.
func requestHash(r *http.Request, body []byte) []byte {
	body = canonicalJSON(body)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%d\n", r.Method, r.URL.EscapedPath(), len(body))
	h.Write(body)
	return h.Sum(nil)
}

// canonicalJSON is body in canonjson's form. An empty body stays empty. A
// body that does not decode is kept as it is; a command's body has been
// decoded strictly before, so that does not happen.
func canonicalJSON(body []byte) []byte {
	if len(body) == 0 {
		return body
	}
	out, err := canonjson.Of(body)
	if err != nil {
		return body
	}
	return out
}
