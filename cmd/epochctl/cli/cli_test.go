package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/cmd/epochctl/cli"
	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/opstatustest"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

const adminToken = "epochctl-test-admin-token"

// bin holds the api and worker binaries built by TestMain: epochctl is
// tested against what ships.
var bin e2ekit.Binaries

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	bin, err = e2ekit.Build()
	if err != nil {
		fmt.Fprintf(os.Stderr, "epochctl tests: %v\n", err)
		return 1
	}
	defer bin.Remove()
	return m.Run()
}

// deployment is an api and a worker (every role) of a test's own, on its
// own database and vhost.
type deployment struct {
	pool *pgxpool.Pool
	addr string
	url  string
	http *http.Client
}

func setup(t *testing.T) *deployment {
	t.Helper()
	pool, dbURL := testdb.New(t)
	amqpURL := testbroker.New(t)
	common := map[string]string{"EPOCH_DATABASE_URL": dbURL, "EPOCH_AMQP_URL": amqpURL, "EPOCH_DB_MAX_CONNS": "5"}
	apiEnv := map[string]string{"EPOCH_ADMIN_TOKEN": adminToken}
	// Healing waits an hour: what the tests store behind the outbox's back
	// is for the operator's commands to find, not for the worker.
	workerEnv := map[string]string{"EPOCH_WORKER_ROLES": "relay,storage,billing", "EPOCH_RELAY_POLL_INTERVAL": "100ms",
		"EPOCH_HEAL_AFTER": "1h"}
	for k, v := range common {
		apiEnv[k], workerEnv[k] = v, v
	}
	// The worker declares the topology the api's status reads.
	worker := bin.Start(t, "worker", "epochctl-worker", workerEnv)
	worker.WaitReady(t, 30*time.Second)
	api := bin.Start(t, "api", "epochctl-api", apiEnv)
	api.WaitReady(t, 30*time.Second)
	return &deployment{pool: pool, addr: api.Addr, url: "http://" + api.Addr, http: &http.Client{Timeout: 10 * time.Second}}
}

// result is one run of epochctl.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// json decodes stdout as one JSON object.
func (r result) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&m), "%s", r)
	return m
}

// run runs epochctl's root command in-process against d's api, the URL and
// token from the environment as an operator sets them.
func (d *deployment) run(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, map[string]string{cli.EnvURL: d.url, cli.EnvToken: adminToken}, args...)
}

func run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	return runIn(t, e2ekit.CtxFor(t, 60*time.Second), cli.Options{Getenv: func(k string) string { return env[k] }}, args...)
}

// runIn runs epochctl until ctx ends, with opts' environment and terminal.
func runIn(t *testing.T, ctx context.Context, opts cli.Options, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	opts.Stdout, opts.Stderr, opts.PollInterval = &stdout, &stderr, 50*time.Millisecond
	code := cli.Main(ctx, args, opts)
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	t.Logf("epochctl %s: %s", strings.Join(args, " "), r)
	require.NotContains(t, r.stdout+r.stderr, adminToken, "epochctl printed the admin token")
	return r
}

// requireExit requires the exit code want, and for a failure exactly one
// line on stderr saying so.
func requireExit(t *testing.T, want int, r result) {
	t.Helper()
	require.Equal(t, want, r.code, "%s", r)
	if want != cli.ExitOK {
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		require.True(t, strings.HasPrefix(last, "epochctl: "), "%s", r)
	}
}

// newUser creates a user through epochctl and returns its id and token.
func (d *deployment) newUser(t *testing.T, name string) (string, string) {
	t.Helper()
	r := d.run(t, "users", "create", name, "--json")
	requireExit(t, cli.ExitOK, r)
	u := r.json(t)
	require.Equal(t, name, u["name"])
	return u["id"].(string), u["token"].(string)
}

// upload uploads a file as token and returns its id and its event's
// position.
func (d *deployment) upload(t *testing.T, token string) (uuid.UUID, int64) {
	t.Helper()
	a := e2ekit.Call(t, d.http, d.addr, http.StatusCreated, "POST", "/v1/files", token, map[string]any{"name": "f", "size_bytes": 1000})
	return uuid.MustParse(a.JSON(t)["id"].(string)), a.Position(t)
}

func TestStatus(t *testing.T) {
	t.Parallel()
	d := setup(t)

	r := d.run(t, "status")
	requireExit(t, cli.ExitOK, r)
	require.Contains(t, r.stdout, "outbox: 0 pending")
	require.Regexp(t, `(?m)^SUBSCRIBER\s+PLACEMENT\s+APPLIED`, r.stdout)
	require.Regexp(t, `(?m)^storage\s+remote\s+0\s`, r.stdout)
	require.Regexp(t, `(?m)^billing\s+remote\s+0\s`, r.stdout)

	r = d.run(t, "status", "--json")
	requireExit(t, cli.ExitOK, r)
	st := r.json(t)
	require.Contains(t, st, "outbox")
	require.Len(t, st["subscribers"], 2)

	// --url and --token override the environment.
	r = run(t, map[string]string{cli.EnvURL: "http://127.0.0.1:1", cli.EnvToken: "wrong"}, "status", "--url", d.url, "--token", adminToken)
	requireExit(t, cli.ExitOK, r)

	// A wrong token is the API's 401, and the token sent is never shown.
	r = run(t, map[string]string{cli.EnvURL: d.url, cli.EnvToken: "not-the-admin-token"}, "status")
	requireExit(t, cli.ExitRefused, r)
	require.Equal(t, "epochctl: a valid bearer token is required (401 unauthorized)\n", r.stderr)
	require.NotContains(t, r.stdout+r.stderr, "not-the-admin-token")
}

func TestUsers(t *testing.T) {
	t.Parallel()
	d := setup(t)

	r := d.run(t, "users", "create", "ann")
	requireExit(t, cli.ExitOK, r)
	require.Regexp(t, `(?m)^ID\s+NAME\s+TOKEN$`, r.stdout)
	fields := strings.Fields(strings.Split(r.stdout, "\n")[1])
	require.Len(t, fields, 3, "%s", r)
	annID, annToken := fields[0], fields[2]
	require.Equal(t, "ann", fields[1])
	storage := func(token string) int {
		a, err := e2ekit.Request(t.Context(), d.http, d.addr, "GET", "/v1/storage", token, nil)
		require.NoError(t, err)
		return a.Status
	}
	require.Equal(t, http.StatusOK, storage(annToken))

	r = d.run(t, "users", "rotate-token", annID, "--json")
	requireExit(t, cli.ExitOK, r)
	rotated := r.json(t)
	require.Equal(t, annID, rotated["id"])
	newToken := rotated["token"].(string)
	require.NotEqual(t, annToken, newToken)
	require.Equal(t, http.StatusOK, storage(newToken))
	e2ekit.Eventually(t, 5*time.Second, "the old token stops working", func() (bool, string) {
		s := storage(annToken)
		return s == http.StatusUnauthorized, fmt.Sprint(s)
	})

	r = d.run(t, "users", "rotate-token", annID)
	requireExit(t, cli.ExitOK, r)
	require.Regexp(t, `(?m)^`+annID+`\s+ann\s+\S+$`, r.stdout)

	// A user that does not exist is the API's 404; a malformed id and a
	// missing name are found before anything is sent.
	r = d.run(t, "users", "rotate-token", uuid.NewString())
	requireExit(t, cli.ExitRefused, r)
	require.Equal(t, "epochctl: no such user (404 not_found)\n", r.stderr)
	r = d.run(t, "users", "rotate-token", "not-a-uuid")
	requireExit(t, cli.ExitUsage, r)
	require.Contains(t, r.stderr, `user id "not-a-uuid" is not a UUID`)
	requireExit(t, cli.ExitUsage, d.run(t, "users", "create"))
	r = d.run(t, "users", "create", "")
	requireExit(t, cli.ExitRefused, r)
	require.Contains(t, r.stderr, "(400 invalid_input)")
}

func TestPrices(t *testing.T) {
	t.Parallel()
	d := setup(t)

	r := d.run(t, "prices", "list", "--json")
	requireExit(t, cli.ExitOK, r)
	require.Empty(t, r.json(t)["items"])

	effective := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	r = d.run(t, "prices", "schedule", "--effective-from", effective, "--currency", "USD", "--tier", "100=0", "--tier", "0.00003")
	requireExit(t, cli.ExitOK, r)
	require.Regexp(t, `(?m)^1\s+`+effective+`\s+USD\s+up to 100: 0, beyond: 0.00003$`, r.stdout)

	later := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	r = d.run(t, "prices", "schedule", "--effective-from", later, "--currency", "EUR", "--tier", "0.5", "--json")
	requireExit(t, cli.ExitOK, r)
	require.Equal(t, json.Number("2"), r.json(t)["version"])

	r = d.run(t, "prices", "list")
	requireExit(t, cli.ExitOK, r)
	require.Regexp(t, `(?m)^VERSION\s+EFFECTIVE_FROM\s+CURRENCY\s+TIERS`, r.stdout)
	require.Regexp(t, `(?m)^1\s+`+effective+`\s+USD\s+up to 100: 0, beyond: 0.00003$`, r.stdout)
	require.Regexp(t, `(?m)^2\s+`+later+`\s+EUR\s+0.5$`, r.stdout)

	r = d.run(t, "prices", "list", "--limit", "1")
	requireExit(t, cli.ExitOK, r)
	require.Regexp(t, `(?m)^1\s`, r.stdout)
	require.NotRegexp(t, `(?m)^2\s`, r.stdout)
	cursor := strings.TrimPrefix(strings.TrimSpace(r.stderr), "more: run again with --cursor ")
	require.NotEqual(t, strings.TrimSpace(r.stderr), cursor, "%s", r)
	r = d.run(t, "prices", "list", "--limit", "1", "--cursor", cursor, "--json")
	requireExit(t, cli.ExitOK, r)
	page := r.json(t)
	require.Len(t, page["items"], 1)
	require.Equal(t, json.Number("2"), page["items"].([]any)[0].(map[string]any)["version"])

	// The API's refusals, with its message.
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	r = d.run(t, "prices", "schedule", "--effective-from", past, "--currency", "USD", "--tier", "1")
	requireExit(t, cli.ExitRefused, r)
	require.Contains(t, r.stderr, "(409 effective_in_past)")
	r = d.run(t, "prices", "schedule", "--effective-from", later, "--currency", "XYZ", "--tier", "1")
	requireExit(t, cli.ExitRefused, r)
	require.Contains(t, r.stderr, "(400 invalid_input)")
	r = d.run(t, "prices", "schedule", "--effective-from", later, "--currency", "USD", "--tier", "5=1", "--tier", "2=1", "--tier", "1")
	requireExit(t, cli.ExitRefused, r)
	require.Contains(t, r.stderr, "tier bounds rise")

	// Bad input, found before anything is sent.
	for _, args := range [][]string{
		{"--currency", "USD", "--tier", "1"},
		{"--effective-from", "tomorrow", "--currency", "USD", "--tier", "1"},
		{"--effective-from", later, "--tier", "1"},
		{"--effective-from", later, "--currency", "USD"},
		{"--effective-from", later, "--currency", "USD", "--tier", "abc"},
		{"--effective-from", later, "--currency", "USD", "--tier", "1=2"},
		{"--effective-from", later, "--currency", "USD", "--tier", "1", "--tier", "2"},
	} {
		r := d.run(t, append([]string{"prices", "schedule"}, args...)...)
		requireExit(t, cli.ExitUsage, r)
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), "%s", r)
	}
	requireExit(t, cli.ExitUsage, d.run(t, "prices", "list", "--limit", "0"))
	requireExit(t, cli.ExitUsage, d.run(t, "prices", "list", "--limit", "many"))

	r = d.run(t, "prices", "list")
	requireExit(t, cli.ExitOK, r)
	require.NotRegexp(t, `(?m)^3\s`, r.stdout, "nothing refused was stored")
}

// recordDeadLetter keeps a dead letter for subscriber as its consumer
// does: the event's id, the position its body claimed, a reason.
func recordDeadLetter(t *testing.T, pool *pgxpool.Pool, subscriber, id string, position int64, reason string) {
	t.Helper()
	_, err := dbsqlc.New().DeadLetterRecord(t.Context(), pool, &dbsqlc.DeadLetterRecordParams{
		Subscriber: subscriber, EventIds: []string{id}, Positions: []int64{position},
		Reasons: []string{reason}, Bodies: [][]byte{[]byte(`{"some":"body"}`)}})
	require.NoError(t, err)
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	d := setup(t)
	_, token := d.newUser(t, "ann")
	file, position := d.upload(t, token)
	genuine := eventstore.ID(file, 1).String()
	recordDeadLetter(t, d.pool, "storage", genuine, position, "failed")
	opstatustest.DeadLetters(t, d.pool, "billing", 2) // naming no stored event

	r := d.run(t, "dead-letters", "list", "storage")
	requireExit(t, cli.ExitOK, r)
	require.Regexp(t, `(?m)^EVENT_ID\s+POSITION\s+TYPE\s+STREAM_ID\s+REASON\s+DEATHS`, r.stdout)
	require.Regexp(t, fmt.Sprintf(`(?m)^%s\s+%d\s+file.uploaded\s+%s\s+failed\s+1\s`, genuine, position, file), r.stdout)

	r = d.run(t, "dead-letters", "list", "billing", "--json")
	requireExit(t, cli.ExitOK, r)
	items := r.json(t)["items"].([]any)
	require.Len(t, items, 2)
	first := items[0].(map[string]any)
	require.Nil(t, first["position"])
	require.Equal(t, "malformed", first["reason"])

	// Pages: the cursor a page prints reads the next one.
	r = d.run(t, "dead-letters", "list", "billing", "--limit", "1")
	requireExit(t, cli.ExitOK, r)
	require.Regexp(t, `(?m)^billing-\S+\s+-\s+-\s+-\s+malformed\s`, r.stdout)
	require.True(t, strings.HasPrefix(r.stderr, "more: run again with --cursor "), "%s", r)
	cursor := strings.TrimSpace(strings.TrimPrefix(r.stderr, "more: run again with --cursor "))
	r = d.run(t, "dead-letters", "list", "billing", "--limit", "1", "--cursor", cursor, "--json")
	requireExit(t, cli.ExitOK, r)
	page := r.json(t)
	require.Nil(t, page["next_cursor"])
	second := page["items"].([]any)[0].(map[string]any)["event_id"].(string)
	require.NotEqual(t, first["event_id"], second)

	// A replay hands the stored event to storage; it leaves the list.
	r = d.run(t, "dead-letters", "replay", "storage", genuine)
	requireExit(t, cli.ExitOK, r)
	require.Equal(t, "replayed 1\n", r.stdout)
	r = d.run(t, "dead-letters", "list", "storage", "--json")
	requireExit(t, cli.ExitOK, r)
	require.Empty(t, r.json(t)["items"])

	// Billing's name no stored event: they stay, with their reason.
	r = d.run(t, "dead-letters", "replay", "billing", "--all", "--json")
	requireExit(t, cli.ExitOK, r)
	require.Equal(t, map[string]any{"replayed": json.Number("0")}, r.json(t))

	r = d.run(t, "dead-letters", "discard", "billing", second)
	requireExit(t, cli.ExitOK, r)
	require.Equal(t, "discarded "+second+"\n", r.stdout)
	r = d.run(t, "dead-letters", "discard", "billing", second)
	requireExit(t, cli.ExitRefused, r)
	require.Equal(t, "epochctl: discard "+second+": no such dead letter (404 not_found)\n", r.stderr)
	r = d.run(t, "dead-letters", "list", "billing", "--json")
	requireExit(t, cli.ExitOK, r)
	require.Len(t, r.json(t)["items"], 1)

	// An unknown subscriber is the API's 404, whatever the call.
	for _, args := range [][]string{
		{"dead-letters", "list", "nosuch"},
		{"dead-letters", "replay", "nosuch", "--all"},
		{"dead-letters", "discard", "nosuch", genuine},
	} {
		r := d.run(t, args...)
		requireExit(t, cli.ExitRefused, r)
		require.True(t, strings.HasSuffix(r.stderr, "no such subscriber (404 not_found)\n"), "%s", r)
	}

	// Bad input, found before anything is sent.
	for _, args := range [][]string{
		{"dead-letters", "list"},
		{"dead-letters", "list", "storage", "--limit", "1001"},
		{"dead-letters", "replay", "storage"},
		{"dead-letters", "replay", "storage", genuine, "--all"},
		{"dead-letters", "discard", "storage"},
	} {
		requireExit(t, cli.ExitUsage, d.run(t, args...))
	}
}

// operationID is the id of the operation a --json run printed.
func operationID(t *testing.T, r result) string {
	t.Helper()
	id, ok := r.json(t)["id"].(string)
	require.True(t, ok, "%s", r)
	return id
}

func TestOperationsAreFollowedToTheirEnd(t *testing.T) {
	t.Parallel()
	d := setup(t)
	owner, token := d.newUser(t, "ann")
	var last int64
	for range 3 {
		_, last = d.upload(t, token)
	}
	// Storage has applied them: what a redrive finds new below is only
	// what the worker never got.
	e2ekit.Call(t, d.http, d.addr, http.StatusOK, "GET", fmt.Sprintf("/v1/storage?min_position=%d", last), token, nil)
	job := e2ekit.Call(t, d.http, d.addr, http.StatusCreated, "POST", "/v1/jobs", token, map[string]any{"name": "j"}).JSON(t)["id"].(string)

	r := d.run(t, "redrive", "billing", "--from", "0")
	requireExit(t, cli.ExitOK, r)
	require.Contains(t, r.stderr, "redrive billing: running")
	require.Contains(t, r.stderr, "redrive billing: done")
	require.Regexp(t, `(?m)^OPERATION\s+KIND\s+TARGET\s+STATE\s+EVENTS_APPLIED\s+DIFFERENCES`, r.stdout)
	require.Regexp(t, `(?m)^\S+\s+redrive\s+billing\s+done\s+\d+\s+0\s`, r.stdout)

	r = d.run(t, "projections", "verify", "--json")
	requireExit(t, cli.ExitOK, r)
	verified := r.json(t)
	require.Equal(t, "done", verified["state"])
	require.Equal(t, json.Number("0"), verified["differences"])

	// A job's row changed behind the events' back: verify finds it (exit
	// 5), rebuild puts it right, verify finds nothing again.
	_, err := d.pool.Exec(t.Context(), `UPDATE jobs SET name = 'tampered' WHERE id = $1`, job)
	require.NoError(t, err)
	r = d.run(t, "projections", "verify")
	requireExit(t, cli.ExitDifferences, r)
	require.Regexp(t, `(?m)^\S+\s+projections_rebuild\s+projections\s+done\s+\d+\s+1\s`, r.stdout)
	require.Contains(t, r.stderr, "found 1 differences")
	requireExit(t, cli.ExitOK, d.run(t, "projections", "rebuild"))
	requireExit(t, cli.ExitOK, d.run(t, "projections", "verify"))
	a := e2ekit.Call(t, d.http, d.addr, http.StatusOK, "GET", "/v1/jobs/"+job, token, nil)
	require.Equal(t, "j", a.JSON(t)["name"])

	// An upload stored with no outbox row never reaches the worker: a
	// redrive hands it to storage, and storage counts it.
	lost, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
		domain.FileUploadedData{OwnerID: uuid.MustParse(owner), Name: "lost", SizeBytes: 7, ContentType: "text/plain"}, time.Now())
	require.NoError(t, err)
	require.NoError(t, database.InTx(t.Context(), d.pool, func(tx *database.Tx) error {
		return eventstore.Append(t.Context(), tx, []eventstore.Event{lost})
	}))
	r = d.run(t, "redrive", "storage", "--from", "1", "--json")
	requireExit(t, cli.ExitOK, r)
	op := r.json(t)
	require.Equal(t, "done", op["state"])
	require.Equal(t, "redrive", op["kind"])
	require.Equal(t, json.Number("1"), op["events_applied"])
	require.NotNil(t, op["finished_at"])
	stored := e2ekit.Call(t, d.http, d.addr, http.StatusOK, "GET", "/v1/storage", token, nil).JSON(t)
	require.Equal(t, json.Number("4"), stored["file_count"])

	r = d.run(t, "rebuild", "storage")
	requireExit(t, cli.ExitOK, r)
	require.Regexp(t, `(?m)^\S+\s+rebuild\s+storage\s+done\s`, r.stdout)

	r = d.run(t, "statements", "verify", "--from", "2020-01-01T00:00:00Z", "--to", time.Now().UTC().Format(time.RFC3339), "--json")
	requireExit(t, cli.ExitOK, r)
	statements := r.json(t)
	require.Equal(t, "statements_verify", statements["kind"])
	require.Equal(t, "done", statements["state"])

	// An operation read again by its id.
	id := statements["id"].(string)
	r = d.run(t, "operations", "show", id)
	requireExit(t, cli.ExitOK, r)
	require.Regexp(t, `(?m)^`+id+`\s+statements_verify\s+statements\s+done\s`, r.stdout)
	r = d.run(t, "operations", "wait", id, "--json")
	requireExit(t, cli.ExitOK, r)
	require.Equal(t, id, operationID(t, r))
	r = d.run(t, "operations", "show", uuid.NewString())
	requireExit(t, cli.ExitRefused, r)
	require.Equal(t, "epochctl: no such operation (404 not_found)\n", r.stderr)

	// Refusals and bad input.
	r = d.run(t, "rebuild", "nosuch")
	requireExit(t, cli.ExitRefused, r)
	require.Equal(t, "epochctl: no such subscriber (404 not_found)\n", r.stderr)
	r = d.run(t, "statements", "verify", "--from", "2030-01-01T00:00:00Z", "--to", "2020-01-01T00:00:00Z")
	requireExit(t, cli.ExitRefused, r)
	require.Contains(t, r.stderr, "(400 invalid_input)")
	for _, args := range [][]string{
		{"redrive", "billing"},
		{"redrive", "billing", "--from", "-1"},
		{"redrive", "billing", "--from", "abc"},
		{"redrive", "--from", "0"},
		{"rebuild"},
		{"projections", "verify", "extra"},
		{"statements", "verify", "--from", "2020-01-01T00:00:00Z"},
		{"statements", "verify", "--from", "yesterday", "--to", "2020-01-01T00:00:00Z"},
		{"operations", "show", "not-a-uuid"},
		{"operations", "wait"},
	} {
		r := d.run(t, args...)
		requireExit(t, cli.ExitUsage, r)
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), "%s", r)
	}
}

// An operation that ends failed exits 4 with its error: a stored event
// storage cannot apply (a file event with no owner) fails a redrive over it.
func TestFailedOperationExitsFour(t *testing.T) {
	t.Parallel()
	d := setup(t)
	bad, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
		map[string]any{"name": "f", "size_bytes": 1}, time.Now())
	require.NoError(t, err)
	require.NoError(t, database.InTx(t.Context(), d.pool, func(tx *database.Tx) error {
		return eventstore.Append(t.Context(), tx, []eventstore.Event{bad})
	}))

	r := d.run(t, "redrive", "storage", "--from", "0")
	requireExit(t, cli.ExitFailed, r)
	require.Regexp(t, `(?m)^\S+\s+redrive\s+storage\s+failed\s`, r.stdout)
	require.Contains(t, r.stdout, "error: ")
	require.Contains(t, r.stderr, "redrive storage: failed")
	require.Regexp(t, `(?m)^epochctl: operation \S+ \(redrive storage\) failed: .*has no owner_id`, r.stderr)

	r = d.run(t, "redrive", "storage", "--from", "0", "--json")
	requireExit(t, cli.ExitFailed, r)
	id := operationID(t, r)
	r = d.run(t, "operations", "wait", id)
	requireExit(t, cli.ExitFailed, r)
	require.Contains(t, r.stderr, "epochctl: operation "+id+" (redrive storage) failed")
	requireExit(t, cli.ExitOK, d.run(t, "operations", "show", id))
}

// Without a deployment: what is wrong before or instead of an answer.
func TestNoAnswer(t *testing.T) {
	t.Parallel()
	addr := e2ekit.FreeAddr(t) // nobody listens there
	env := map[string]string{cli.EnvURL: "http://" + addr, cli.EnvToken: adminToken}

	r := run(t, env, "status")
	requireExit(t, cli.ExitUnavailable, r)
	require.Contains(t, r.stderr, "epochctl: cannot reach the api at http://"+addr)

	r = run(t, map[string]string{cli.EnvURL: "http://" + addr}, "status")
	requireExit(t, cli.ExitUsage, r)
	require.Equal(t, "epochctl: no admin token: set EPOCH_ADMIN_TOKEN or give --token\n", r.stderr)

	r = run(t, env, "status", "--url", "127.0.0.1:8080")
	requireExit(t, cli.ExitUsage, r)
	require.Contains(t, r.stderr, "is not an http:// or https:// URL")

	for _, args := range [][]string{
		{"nosuch"}, {"status", "--nosuch"}, {"status", "extra"}, {"dead-letters", "list"},
		{"dead-letters"}, {"dead-letters", "lst", "storage"}, {"users"}, {"prices", "show"},
		{"projections"}, {"operations", "list"}, {"statements", "check"},
	} {
		r := run(t, env, args...)
		requireExit(t, cli.ExitUsage, r)
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), "%s", r)
	}

	r = run(t, env, "--help")
	requireExit(t, cli.ExitOK, r)
	for _, want := range []string{"EPOCH_URL", "EPOCH_ADMIN_TOKEN", "Exit codes", "dead-letters", "redrive", "statements"} {
		require.Contains(t, r.stdout, want)
	}
}

// An operation whose runner holds its lock reads running: following it
// until interrupted exits 130 and says how to take it up again, the
// operation untouched. Once its runner is gone (the lock let go, as when
// the api running it stops) it reads failed, and following it exits 4.
func TestFollowingIsInterruptedAndTakenUpAgain(t *testing.T) {
	t.Parallel()
	d := setup(t)
	conn, err := d.pool.Acquire(t.Context())
	require.NoError(t, err)
	defer conn.Release()
	id, key := uuid.NewString(), int64(0x5eed)
	_, err = conn.Exec(t.Context(), `SELECT pg_advisory_lock($1)`, key)
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), `INSERT INTO operations (id, kind, target, lock_key) VALUES ($1, 'redrive', 'billing', $2)`, id, key)
	require.NoError(t, err)

	env := map[string]string{cli.EnvURL: d.url, cli.EnvToken: adminToken}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	r := runIn(t, ctx, cli.Options{Getenv: func(k string) string { return env[k] }, StderrIsTerminal: true}, "operations", "wait", id)
	requireExit(t, cli.ExitInterrupted, r)
	require.Contains(t, r.stderr, "\r\033[Kredrive billing: running, 0 events applied, 0 differences (")
	require.Contains(t, r.stderr, "epochctl: interrupted; operation "+id+" goes on in the api: epochctl operations wait "+id+"\n")
	require.Empty(t, r.stdout)
	r = d.run(t, "operations", "show", id, "--json")
	requireExit(t, cli.ExitOK, r)
	require.Equal(t, "running", r.json(t)["state"])
	// Another of the same target is the API's 409 meanwhile.
	r = d.run(t, "redrive", "billing", "--from", "0")
	requireExit(t, cli.ExitRefused, r)
	require.Equal(t, "epochctl: an operation of this target is running; wait for it to end (409 operation_running)\n", r.stderr)

	_, err = conn.Exec(t.Context(), `SELECT pg_advisory_unlock($1)`, key)
	require.NoError(t, err)
	r = d.run(t, "operations", "wait", id)
	requireExit(t, cli.ExitFailed, r)
	require.Contains(t, r.stderr, "epochctl: operation "+id+" (redrive billing) failed: the process running it stopped\n")
}
