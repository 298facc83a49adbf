package e2e_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

const adminToken = "e2e-admin-token"

// system is one Epoch deployment of a test: its own database and vhost, an
// api process and a worker process (all roles), and an outside AMQP
// consumer recording the exchange.
type system struct {
	name    string
	pool    *pgxpool.Pool
	amqpURL string
	api     *e2ekit.Proc
	worker  *e2ekit.Proc
	rec     *e2ekit.Recorder
	http    *http.Client
	apiEnv  map[string]string // what the api was started with, for another one
}

// newSystem starts a system; inline is EPOCH_INLINE_SUBSCRIBERS of its api.
func newSystem(t *testing.T, name, inline string) *system {
	t.Helper()
	pool, dbURL := testdb.New(t)
	amqpURL := testbroker.New(t)
	s := &system{name: name, pool: pool, amqpURL: amqpURL, http: &http.Client{Timeout: 30 * time.Second}}
	common := map[string]string{
		"EPOCH_DATABASE_URL": dbURL,
		"EPOCH_AMQP_URL":     amqpURL,
		"EPOCH_DB_MAX_CONNS": "5",
	}
	apiEnv := map[string]string{"EPOCH_ADMIN_TOKEN": adminToken, "EPOCH_INLINE_SUBSCRIBERS": inline}
	workerEnv := map[string]string{"EPOCH_WORKER_ROLES": "relay,storage,billing", "EPOCH_RELAY_POLL_INTERVAL": "100ms"}
	for k, v := range common {
		apiEnv[k], workerEnv[k] = v, v
	}
	// The worker declares the topology; the recorder binds to it before the
	// api takes the first command.
	s.worker = bin.Start(t, "worker", name+"-worker", workerEnv)
	s.worker.WaitReady(t, 30*time.Second)
	s.rec = newRecorder(t, amqpURL)
	s.apiEnv = apiEnv
	s.api = bin.Start(t, "api", name+"-api", apiEnv)
	s.api.WaitReady(t, 30*time.Second)
	return s
}

// call sends a request to the api and requires the status want.
func (s *system) call(t *testing.T, want int, method, path, token string, body any) e2ekit.Answer {
	t.Helper()
	return e2ekit.Call(t, s.http, s.api.Addr, want, method, path, token, body)
}

// get sends GET path to the api process p as token and returns the status,
// whatever it is (call requires one).
func (s *system) get(t *testing.T, p *e2ekit.Proc, path, token string) int {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+p.Addr+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.http.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// usageNow is GET /v1/usage around now, with minPosition.
func usageNow(minPosition int64) string {
	return e2ekit.UsagePath(time.Now().Add(-time.Hour), time.Now().Add(time.Hour), minPosition)
}

func (s *system) newUser(t *testing.T, name string) string {
	t.Helper()
	got := s.call(t, http.StatusCreated, "POST", "/v1/users", adminToken, map[string]string{"name": name})
	return got.JSON(t)["token"].(string)
}

// workerMetric sums the samples of a Prometheus metric of the worker whose
// labels contain match (e.g. `subscriber="storage"`).
func (s *system) workerMetric(t *testing.T, name, match string) float64 {
	t.Helper()
	return e2ekit.Metric(t, s.http, s.worker.Addr, name, match)
}

// step is one command of a script, in terms of the script's own numbering
// of users, files and jobs, so two systems can run the same script.
type step struct {
	Kind  string // upload, delete_file, create_job, link, unlink, set_files, delete_job
	User  int
	File  int   // upload: the number the new file gets
	Job   int   // create_job: the number the new job gets
	Files []int // set_files
	Size  int64
}

// makeScript writes a random but valid command sequence over users users.
func makeScript(seed uint64, users, steps int) []step {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	type userState struct {
		files, jobs []int // live
	}
	us := make([]userState, users)
	nextFile, nextJob := 0, 0
	remove := func(xs []int, x int) []int {
		for i, v := range xs {
			if v == x {
				return append(xs[:i:i], xs[i+1:]...)
			}
		}
		return xs
	}
	var script []step
	for len(script) < steps {
		u := rng.IntN(users)
		s := &us[u]
		r := rng.Float64()
		switch {
		case len(s.files) < 2 || r < 0.35:
			script = append(script, step{Kind: "upload", User: u, File: nextFile, Size: rng.Int64N(1 << 42)})
			s.files = append(s.files, nextFile)
			nextFile++
		case r < 0.5:
			f := s.files[rng.IntN(len(s.files))]
			script = append(script, step{Kind: "delete_file", User: u, File: f})
			s.files = remove(s.files, f)
		case r < 0.6 || len(s.jobs) == 0:
			script = append(script, step{Kind: "create_job", User: u, Job: nextJob})
			s.jobs = append(s.jobs, nextJob)
			nextJob++
		case r < 0.75:
			script = append(script, step{Kind: "link", User: u, Job: s.jobs[rng.IntN(len(s.jobs))], File: s.files[rng.IntN(len(s.files))]})
		case r < 0.85:
			script = append(script, step{Kind: "unlink", User: u, Job: s.jobs[rng.IntN(len(s.jobs))], File: s.files[rng.IntN(len(s.files))]})
		case r < 0.95:
			var fs []int
			for _, f := range s.files {
				if rng.IntN(2) == 0 {
					fs = append(fs, f)
				}
			}
			script = append(script, step{Kind: "set_files", User: u, Job: s.jobs[rng.IntN(len(s.jobs))], Files: fs})
		default:
			j := s.jobs[rng.IntN(len(s.jobs))]
			script = append(script, step{Kind: "delete_job", User: u, Job: j})
			s.jobs = remove(s.jobs, j)
		}
	}
	return script
}

// run plays script on s with one user per script user (made here), and
// returns the users' tokens and each step's Epoch-Position.
func (s *system) run(t *testing.T, users int, script []step) (tokens []string, positions []int64) {
	t.Helper()
	for u := range users {
		tokens = append(tokens, s.newUser(t, fmt.Sprintf("user-%d", u)))
	}
	files, jobs := map[int]string{}, map[int]string{}
	for i, st := range script {
		tok := tokens[st.User]
		var a e2ekit.Answer
		switch st.Kind {
		case "upload":
			a = s.call(t, http.StatusCreated, "POST", "/v1/files", tok, map[string]any{
				"name": fmt.Sprintf("file-%d.bin", st.File), "size_bytes": st.Size, "content_type": "application/x-e2e"})
			files[st.File] = a.JSON(t)["id"].(string)
		case "delete_file":
			a = s.call(t, http.StatusNoContent, "DELETE", "/v1/files/"+files[st.File], tok, nil)
		case "create_job":
			a = s.call(t, http.StatusCreated, "POST", "/v1/jobs", tok, map[string]any{"name": fmt.Sprintf("job-%d", st.Job)})
			jobs[st.Job] = a.JSON(t)["id"].(string)
		case "link":
			a = s.call(t, http.StatusOK, "PUT", "/v1/jobs/"+jobs[st.Job]+"/files/"+files[st.File], tok, nil)
		case "unlink":
			a = s.call(t, http.StatusOK, "DELETE", "/v1/jobs/"+jobs[st.Job]+"/files/"+files[st.File], tok, nil)
		case "set_files":
			ids := []string{}
			for _, f := range st.Files {
				ids = append(ids, files[f])
			}
			a = s.call(t, http.StatusOK, "PUT", "/v1/jobs/"+jobs[st.Job]+"/files", tok, map[string]any{"file_ids": ids})
		case "delete_job":
			a = s.call(t, http.StatusNoContent, "DELETE", "/v1/jobs/"+jobs[st.Job], tok, nil)
		default:
			t.Fatalf("step %d: unknown kind %q", i, st.Kind)
		}
		positions = append(positions, a.Position(t))
	}
	return tokens, positions
}
