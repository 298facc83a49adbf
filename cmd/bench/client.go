package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// client calls the api as one user.
type client struct {
	base  string
	token string
	http  *http.Client
	// answers, when set, records when each command's answer arrived, by
	// its Epoch-Position: B3 measures from there (just after the commit).
	answers *answerLog
}

// answerLog maps a command's position to the time its answer arrived.
type answerLog struct {
	mu sync.Mutex
	at map[int64]time.Time
}

func newAnswerLog() *answerLog { return &answerLog{at: make(map[int64]time.Time)} }

func (l *answerLog) record(position int64, at time.Time) {
	l.mu.Lock()
	l.at[position] = at
	l.mu.Unlock()
}

func (l *answerLog) get(position int64) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.at[position]
	return at, ok
}

// newHTTPClient keeps up to conns idle connections, so a run at concurrency
// c reuses c connections instead of dialing per request.
func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     time.Minute,
		},
	}
}

// newUser creates a user through POST /v1/users and a client acting as it.
func (e *env) newUser(ctx context.Context, name string, conns int) (*client, error) {
	admin := &client{base: e.apiURL, token: e.adminToken, http: newHTTPClient(1)}
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if err := admin.call(ctx, http.MethodPost, "/v1/users", map[string]string{"name": name}, http.StatusCreated, &out); err != nil {
		return nil, err
	}
	return &client{base: e.apiURL, token: out.Token, http: newHTTPClient(conns)}, nil
}

// withConn is the same user on another HTTP client: its own connections.
func (c *client) withConn(conns int) *client {
	return &client{base: c.base, token: c.token, http: newHTTPClient(conns)}
}

// call sends a JSON request and decodes the answer into out (when not nil);
// any status but want is an error.
func (c *client) call(ctx context.Context, method, path string, in any, want int, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	answered := time.Now()
	defer resp.Body.Close()
	if c.answers != nil {
		if pos, err := strconv.ParseInt(resp.Header.Get("Epoch-Position"), 10, 64); err == nil {
			c.answers.record(pos, answered)
		}
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type fileOut struct {
	ID       string `json:"id"`
	Position int64  `json:"position"`
}

type jobOut struct {
	ID      string `json:"id"`
	Version int    `json:"version"`
	Files   []struct {
		ID string `json:"id"`
	} `json:"files"`
	Position int64 `json:"position"`
}

func (j jobOut) has(fileID string) bool {
	for _, f := range j.Files {
		if f.ID == fileID {
			return true
		}
	}
	return false
}

func (c *client) uploadFile(ctx context.Context, name string, size int64) (string, error) {
	var f fileOut
	err := c.call(ctx, http.MethodPost, "/v1/files", map[string]any{"name": name, "size_bytes": size, "content_type": "application/octet-stream"}, http.StatusCreated, &f)
	return f.ID, err
}

func (c *client) deleteFile(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/v1/files/"+id, nil, http.StatusNoContent, nil)
}

func (c *client) createJob(ctx context.Context, name string) (string, error) {
	var j jobOut
	err := c.call(ctx, http.MethodPost, "/v1/jobs", map[string]string{"name": name}, http.StatusCreated, &j)
	return j.ID, err
}

func (c *client) link(ctx context.Context, job, file string) (jobOut, error) {
	var j jobOut
	err := c.call(ctx, http.MethodPut, "/v1/jobs/"+job+"/files/"+file, nil, http.StatusOK, &j)
	return j, err
}

func (c *client) unlink(ctx context.Context, job, file string) (jobOut, error) {
	var j jobOut
	err := c.call(ctx, http.MethodDelete, "/v1/jobs/"+job+"/files/"+file, nil, http.StatusOK, &j)
	return j, err
}

func (c *client) getJob(ctx context.Context, job string) (jobOut, error) {
	var j jobOut
	err := c.call(ctx, http.MethodGet, "/v1/jobs/"+job, nil, http.StatusOK, &j)
	return j, err
}

func (c *client) setFiles(ctx context.Context, job string, files []string) (jobOut, error) {
	var j jobOut
	if files == nil {
		files = []string{}
	}
	err := c.call(ctx, http.MethodPut, "/v1/jobs/"+job+"/files", map[string]any{"file_ids": files}, http.StatusOK, &j)
	return j, err
}

// uploadMany uploads n files at the given concurrency.
func (c *client) uploadMany(ctx context.Context, n, concurrency int, prefix string) ([]string, error) {
	ids := make([]string, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i := range n {
		g.Go(func() error {
			id, err := c.uploadFile(ctx, fmt.Sprintf("%s-%d.bin", prefix, i), int64(1000+i))
			ids[i] = id
			return err
		})
	}
	return ids, g.Wait()
}

// createJobs creates n jobs at the given concurrency.
func (c *client) createJobs(ctx context.Context, n, concurrency int, prefix string) ([]string, error) {
	ids := make([]string, n)
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i := range n {
		g.Go(func() error {
			id, err := c.createJob(ctx, fmt.Sprintf("%s-%d", prefix, i))
			mu.Lock()
			ids[i] = id
			mu.Unlock()
			return err
		})
	}
	return ids, g.Wait()
}
