package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/harness"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// tracedCall sends a request that carries a trace of the test's own (a
// W3C traceparent, sampled), requires the status want, and returns the
// answer's JSON and that trace's id and the test's span id.
func tracedCall(t *testing.T, client *http.Client, addr string, want int, method, path, token string, body any) (answer map[string]any, traceID, parentID string) {
	t.Helper()
	traceID, parentID = harness.RandomHex(16), harness.RandomHex(8)
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, r)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, want, resp.StatusCode, "%s %s: %s", method, path, b)
	if len(b) > 0 {
		require.NoError(t, json.Unmarshal(b, &answer))
	}
	return answer, traceID, parentID
}

// traceView is what the receiver holds of one trace.
type traceView []harness.ReceivedSpan

func (v traceView) find(pred func(harness.ReceivedSpan) bool) (harness.ReceivedSpan, bool) {
	for _, s := range v {
		if pred(s) {
			return s, true
		}
	}
	return harness.ReceivedSpan{}, false
}

func (v traceView) children(parent harness.ReceivedSpan) traceView {
	var out traceView
	for _, s := range v {
		if s.ParentSpanID == parent.SpanID {
			out = append(out, s)
		}
	}
	return out
}

func named(name string, kind tracepb.Span_SpanKind) func(harness.ReceivedSpan) bool {
	return func(s harness.ReceivedSpan) bool { return s.Name == name && s.Kind == kind }
}

// sends finds the span of a round trip to Postgres that sent statement.
func sends(statement string) func(harness.ReceivedSpan) bool {
	return func(s harness.ReceivedSpan) bool {
		summary, _ := s.Attributes["db.query.summary"].(string)
		return s.Kind == tracepb.Span_SPAN_KIND_CLIENT && s.Name == summary && slices.Contains(strings.Split(summary, ", "), statement)
	}
}

func of(spans []harness.ReceivedSpan, traceID string) traceView {
	var v traceView
	for _, s := range spans {
		if s.TraceID == traceID {
			v = append(v, s)
		}
	}
	return v
}

// commandTrace is one command's trace as the processes exported it.
type commandTrace struct {
	request, transaction harness.ReceivedSpan
	send                 harness.ReceivedSpan
	process              map[string]harness.ReceivedSpan // by queue
	processTx            map[string]harness.ReceivedSpan
}

// read finds the parts of the trace of a command sent as route, whose
// event is routed by routingKey to the queues given; a description of what
// is missing otherwise.
func readCommandTrace(v traceView, route, routingKey, parentID string, queues []string) (commandTrace, string) {
	var ct commandTrace
	var ok bool
	if ct.request, ok = v.find(named(route, tracepb.Span_SPAN_KIND_SERVER)); !ok {
		return ct, "no server span " + route
	}
	if ct.request.ParentSpanID != parentID {
		return ct, "the server span does not continue the caller's trace"
	}
	if ct.transaction, ok = v.children(ct.request).find(named("transaction", tracepb.Span_SPAN_KIND_CLIENT)); !ok {
		return ct, "no transaction span under the request"
	}
	if _, ok = v.children(ct.transaction).find(sends("OutboxInsert")); !ok {
		return ct, "no round trip with OutboxInsert in the command's transaction"
	}
	if ct.send, ok = v.find(func(s harness.ReceivedSpan) bool {
		return s.Name == "publish catacloud.events" && s.Kind == tracepb.Span_SPAN_KIND_PRODUCER && s.Attributes["messaging.rabbitmq.destination.routing_key"] == routingKey
	}); !ok {
		return ct, "no send span for " + routingKey
	}
	ct.process, ct.processTx = map[string]harness.ReceivedSpan{}, map[string]harness.ReceivedSpan{}
	for _, q := range queues {
		p, ok := v.find(named("process "+q, tracepb.Span_SPAN_KIND_CONSUMER))
		if !ok {
			return ct, "no process span of " + q
		}
		tx, ok := v.children(p).find(named("transaction", tracepb.Span_SPAN_KIND_CLIENT))
		if !ok {
			return ct, "no transaction span under the process span of " + q
		}
		if len(v.children(tx)) == 0 {
			return ct, "no statement spans in the transaction of " + q
		}
		ct.process[q], ct.processTx[q] = p, tx
	}
	return ct, ""
}

// One command is one trace: the api's request and transaction (with its
// statements), the relay's send and each subscriber's process span and
// transaction, each exported by the process that did the work, and the
// message carries the request's trace context to outside consumers too.
// An upload's event goes to storage and billing; a link's to neither (no
// subscriber of ours takes job events), so its trace ends at the relay's
// send and the outside consumer's headers.
func TestOneCommandIsOneTraceAcrossProcesses(t *testing.T) {
	t.Parallel()
	rcv, err := harness.StartTraceReceiver(true)
	require.NoError(t, err)
	t.Cleanup(rcv.Close)
	pool, dbURL := testdb.New(t)
	_ = pool
	amqpURL := testbroker.New(t)
	env := func(extra map[string]string) map[string]string {
		e := map[string]string{
			"EPOCH_DATABASE_URL": dbURL, "EPOCH_AMQP_URL": amqpURL, "EPOCH_DB_MAX_CONNS": "5",
			"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.URL, "OTEL_BSP_SCHEDULE_DELAY": "100",
		}
		for k, v := range extra {
			e[k] = v
		}
		return e
	}
	// The relay and each movable subscriber in a worker of its own.
	movable := subscribers.Movable().Names()
	var queues []string
	for _, name := range movable {
		queues = append(queues, broker.QueueName(name))
	}
	workers := map[string]*e2ekit.Proc{}
	for _, role := range subscribers.Roles() {
		workers[role] = bin.Start(t, "worker", "trace-"+role, env(map[string]string{"EPOCH_WORKER_ROLES": role, "EPOCH_RELAY_POLL_INTERVAL": "100ms"}))
		workers[role].WaitReady(t, 30*time.Second)
	}
	rec := newRecorder(t, amqpURL)
	api := bin.Start(t, "api", "trace-api", env(map[string]string{"EPOCH_ADMIN_TOKEN": adminToken}))
	api.WaitReady(t, 30*time.Second)
	client := &http.Client{Timeout: 30 * time.Second}
	user := e2ekit.Call(t, client, api.Addr, http.StatusCreated, "POST", "/v1/users", adminToken, map[string]string{"name": "traced"}).JSON(t)
	token := user["token"].(string)

	file, uploadTrace, uploadParent := tracedCall(t, client, api.Addr, http.StatusCreated, "POST", "/v1/files", token, map[string]any{"name": "a.bin", "size_bytes": 1000})
	job := e2ekit.Call(t, client, api.Addr, http.StatusCreated, "POST", "/v1/jobs", token, map[string]any{"name": "j"}).JSON(t)
	_, linkTrace, linkParent := tracedCall(t, client, api.Addr, http.StatusOK, "PUT", fmt.Sprintf("/v1/jobs/%s/files/%s", job["id"], file["id"]), token, nil)

	var upload, link commandTrace
	e2ekit.Eventually(t, 30*time.Second, "both commands' traces exported", func() (bool, string) {
		spans := rcv.Spans()
		var missing string
		upload, missing = readCommandTrace(of(spans, uploadTrace), "POST /v1/files", "file.uploaded", uploadParent, queues)
		if missing != "" {
			return false, "upload: " + missing
		}
		link, missing = readCommandTrace(of(spans, linkTrace), "PUT /v1/jobs/{id}/files/{file_id}", "job.file_linked", linkParent, nil)
		return missing == "", "link: " + missing
	})

	// Each part in the process that did it.
	require.Equal(t, int64(api.Pid()), upload.request.PID)
	require.Equal(t, "epoch-api", upload.request.Service)
	require.Equal(t, upload.request.PID, upload.transaction.PID)
	require.Equal(t, int64(workers[subscribers.RoleRelay].Pid()), upload.send.PID)
	require.Equal(t, "epoch-worker", upload.send.Service)
	for _, role := range movable {
		q := broker.QueueName(role)
		require.Equal(t, int64(workers[role].Pid()), upload.process[q].PID, role)
		require.Equal(t, upload.process[q].PID, upload.processTx[q].PID, role)
	}

	// The relay's send and the subscribers' process spans hang under the
	// request that wrote the event; the send links to it.
	require.Equal(t, upload.request.SpanID, upload.send.ParentSpanID)
	require.Contains(t, upload.send.Links, harness.SpanLink{TraceID: uploadTrace, SpanID: upload.request.SpanID})
	for q, p := range upload.process {
		require.Equal(t, upload.request.SpanID, p.ParentSpanID, q)
	}

	// The semantic conventions: HTTP, database, messaging (RabbitMQ).
	require.Equal(t, "POST", upload.request.Attributes["http.request.method"])
	require.Equal(t, "/v1/files", upload.request.Attributes["http.route"])
	require.Equal(t, int64(http.StatusCreated), upload.request.Attributes["http.response.status_code"])
	roundTrip, _ := of(rcv.Spans(), uploadTrace).children(upload.transaction).find(sends("OutboxInsert"))
	require.Equal(t, "postgresql", roundTrip.Attributes["db.system.name"])
	require.Equal(t, int64(5432), upload.transaction.Attributes["server.port"])
	require.NotEmpty(t, upload.transaction.Attributes["db.namespace"])
	require.Equal(t, int64(len(strings.Split(roundTrip.Name, ", "))), roundTrip.Attributes["db.operation.batch.size"], roundTrip.Name)
	stored := e2ekit.LoadEvents(t, e2ekit.CtxFor(t, 10*time.Second), pool)
	var uploadedID string
	for _, e := range stored {
		if e.Type == "file.uploaded" {
			uploadedID = e.ID.String()
		}
	}
	for k, want := range map[string]any{
		"messaging.system": "rabbitmq", "messaging.operation.type": "send", "messaging.operation.name": "publish",
		"messaging.destination.name": "catacloud.events", "messaging.rabbitmq.destination.routing_key": "file.uploaded",
		"messaging.message.id": uploadedID,
	} {
		require.Equal(t, want, upload.send.Attributes[k], k)
	}
	for q, p := range upload.process {
		for k, want := range map[string]any{
			"messaging.system": "rabbitmq", "messaging.operation.type": "process", "messaging.operation.name": "process",
			"messaging.destination.name": "catacloud.events", "messaging.destination.subscription.name": q,
			"messaging.rabbitmq.destination.routing_key": "file.uploaded", "messaging.message.id": uploadedID,
		} {
			require.Equal(t, want, p.Attributes[k], "%s %s", q, k)
		}
		require.Contains(t, p.Attributes, "messaging.rabbitmq.message.delivery_tag", q)
	}

	// A traceparent from outside that is not one (too long, not hex) is
	// ignored: the request answers as ever and starts a trace of its own.
	req, err := http.NewRequest("POST", "http://"+api.Addr+"/v1/jobs", strings.NewReader(`{"name":"hostile"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+strings.Repeat("z", 32)+"-"+strings.Repeat("9", 4000)+"-01")
	resp, err := client.Do(req)
	require.NoError(t, err)
	var hostileJob map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&hostileJob))
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	require.NotEmpty(t, hostileJob["id"])
	e2ekit.Eventually(t, 10*time.Second, "the hostile request's own trace", func() (bool, string) {
		roots := 0 // the first job's request, sent with no traceparent, and this one
		for _, s := range rcv.Spans() {
			if s.Name == "POST /v1/jobs" && s.Kind == tracepb.Span_SPAN_KIND_SERVER && s.ParentSpanID == "" {
				roots++
			}
		}
		return roots == 2, fmt.Sprint(roots, " root server spans for POST /v1/jobs")
	})

	// The link's message carries its request's trace context to whoever
	// consumes the exchange: the relay's send is under that request.
	require.Equal(t, link.request.SpanID, link.send.ParentSpanID)
	e2ekit.Eventually(t, 10*time.Second, "the outside consumer has the link's message", func() (bool, string) {
		got, _ := rec.Snapshot()
		for _, d := range got {
			if d.Type == "job.file_linked" {
				tp, _ := d.Headers["traceparent"].(string)
				return strings.HasPrefix(tp, "00-"+linkTrace+"-"+link.request.SpanID+"-"), "traceparent " + tp
			}
		}
		return false, "no job.file_linked message yet"
	})
}
