package harness

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

// Answer is an HTTP response, read whole.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// newRequest is a request to url as token (none: no Authorization) with
// body as JSON (nil: none).
func newRequest(ctx context.Context, method, url, token string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// Request sends one request to the process at addr as token (none: no
// Authorization) with body as JSON (nil: none), and reads the answer
// whatever its status.
func Request(ctx context.Context, client *http.Client, addr, method, path, token string, body any) (Answer, error) {
	req, err := newRequest(ctx, method, "http://"+addr+path, token, body)
	if err != nil {
		return Answer{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Answer{}, fmt.Errorf("%s %s on %s: %w", method, path, addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Answer{}, fmt.Errorf("%s %s on %s: read the answer: %w", method, path, addr, err)
	}
	return Answer{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// Client calls the api as one user.
type Client struct {
	Base  string // the api's URL
	ID    string // the user's, when NewUser made it
	Token string
	HTTP  *http.Client
	// Answered, when set, is told when each command's answer arrived, by
	// its Epoch-Position, before its body is read.
	Answered func(position int64, at time.Time)
}

// NewHTTPClient keeps up to conns idle connections, so a run at
// concurrency c reuses c connections instead of dialing per request.
func NewHTTPClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     time.Minute,
		},
	}
}

// NewUser creates a user through POST /v1/users of the api at base (as
// the admin token) and returns a client acting as it on conns connections.
func NewUser(ctx context.Context, base, adminToken, name string, conns int) (*Client, error) {
	admin := &Client{Base: base, Token: adminToken, HTTP: NewHTTPClient(1)}
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	if err := admin.Call(ctx, http.MethodPost, "/v1/users", map[string]string{"name": name}, http.StatusCreated, &out); err != nil {
		return nil, err
	}
	return &Client{Base: base, ID: out.ID, Token: out.Token, HTTP: NewHTTPClient(conns)}, nil
}

// WithConns is the same user on another HTTP client: its own connections.
func (c *Client) WithConns(conns int) *Client {
	return &Client{Base: c.Base, ID: c.ID, Token: c.Token, HTTP: NewHTTPClient(conns)}
}

// Call sends a JSON request and decodes the answer into out (when not
// nil); any status but want is an error.
func (c *Client) Call(ctx context.Context, method, path string, in any, want int, out any) error {
	req, err := newRequest(ctx, method, c.Base+path, c.Token, in)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	answered := time.Now()
	defer resp.Body.Close()
	if c.Answered != nil {
		if pos, err := strconv.ParseInt(resp.Header.Get("Epoch-Position"), 10, 64); err == nil {
			c.Answered(pos, answered)
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

// File is the api's answer to an upload.
type File struct {
	ID       string `json:"id"`
	Position int64  `json:"position"`
}

// Job is the api's answer to a job command or read.
type Job struct {
	ID      string `json:"id"`
	Version int    `json:"version"`
	Files   []struct {
		ID string `json:"id"`
	} `json:"files"`
	Position int64 `json:"position"`
}

// Has reports whether the job lists the file.
func (j Job) Has(fileID string) bool {
	for _, f := range j.Files {
		if f.ID == fileID {
			return true
		}
	}
	return false
}

// UploadFile uploads a file of name and size.
func (c *Client) UploadFile(ctx context.Context, name string, size int64) (File, error) {
	var f File
	err := c.Call(ctx, http.MethodPost, "/v1/files", map[string]any{"name": name, "size_bytes": size, "content_type": "application/octet-stream"}, http.StatusCreated, &f)
	return f, err
}

// DeleteFile deletes a file.
func (c *Client) DeleteFile(ctx context.Context, id string) error {
	return c.Call(ctx, http.MethodDelete, "/v1/files/"+id, nil, http.StatusNoContent, nil)
}

// CreateJob creates an empty job and returns its id.
func (c *Client) CreateJob(ctx context.Context, name string) (string, error) {
	var j Job
	err := c.Call(ctx, http.MethodPost, "/v1/jobs", map[string]string{"name": name}, http.StatusCreated, &j)
	return j.ID, err
}

// Link links a file to a job.
func (c *Client) Link(ctx context.Context, job, file string) (Job, error) {
	var j Job
	err := c.Call(ctx, http.MethodPut, "/v1/jobs/"+job+"/files/"+file, nil, http.StatusOK, &j)
	return j, err
}

// Unlink unlinks a file from a job.
func (c *Client) Unlink(ctx context.Context, job, file string) (Job, error) {
	var j Job
	err := c.Call(ctx, http.MethodDelete, "/v1/jobs/"+job+"/files/"+file, nil, http.StatusOK, &j)
	return j, err
}

// GetJob reads a job's preview.
func (c *Client) GetJob(ctx context.Context, job string) (Job, error) {
	var j Job
	err := c.Call(ctx, http.MethodGet, "/v1/jobs/"+job, nil, http.StatusOK, &j)
	return j, err
}

// SetFiles makes a job's files exactly files.
func (c *Client) SetFiles(ctx context.Context, job string, files []string) (Job, error) {
	var j Job
	if files == nil {
		files = []string{}
	}
	err := c.Call(ctx, http.MethodPut, "/v1/jobs/"+job+"/files", map[string]any{"file_ids": files}, http.StatusOK, &j)
	return j, err
}

// UploadMany uploads n files at the given concurrency and returns their
// ids.
func (c *Client) UploadMany(ctx context.Context, n, concurrency int, prefix string) ([]string, error) {
	ids := make([]string, n)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i := range n {
		g.Go(func() error {
			f, err := c.UploadFile(ctx, fmt.Sprintf("%s-%d.bin", prefix, i), int64(1000+i))
			ids[i] = f.ID
			return err
		})
	}
	return ids, g.Wait()
}

// CreateJobs creates n jobs at the given concurrency and returns their ids.
func (c *Client) CreateJobs(ctx context.Context, n, concurrency int, prefix string) ([]string, error) {
	ids := make([]string, n)
	var mu sync.Mutex
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i := range n {
		g.Go(func() error {
			id, err := c.CreateJob(ctx, fmt.Sprintf("%s-%d", prefix, i))
			mu.Lock()
			ids[i] = id
			mu.Unlock()
			return err
		})
	}
	return ids, g.Wait()
}

// Get GETs path; any status but 200 is an error. The caller closes the
// body.
func (c *Client) Get(ctx context.Context, path string) (*http.Response, error) {
	resp, err := c.get(ctx, path)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %d: %s", path, resp.StatusCode, b)
	}
	return resp, nil
}

func (c *Client) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := newRequest(ctx, http.MethodGet, c.Base+path, c.Token, nil)
	if err != nil {
		return nil, err
	}
	return c.HTTP.Do(req)
}

// GetBody GETs path and returns the whole body; any status but 200 is an
// error.
func (c *Client) GetBody(ctx context.Context, path string) ([]byte, error) {
	resp, err := c.Get(ctx, path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// DrainBody GETs path, reads the whole body without keeping it and returns
// its length; any status but 200 is an error.
func (c *Client) DrainBody(ctx context.Context, path string) (int, error) {
	resp, err := c.Get(ctx, path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	return int(n), err
}

// Status GETs path and returns the answer's status, the body read and
// dropped so the connection is kept.
func (c *Client) Status(ctx context.Context, path string) (int, error) {
	resp, err := c.get(ctx, path)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}
