package harness

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TraceReceiver is an OTLP/HTTP trace receiver of its own (what a
// collector or Jaeger is on port 4318): the processes export to its URL
// (OTEL_EXPORTER_OTLP_ENDPOINT), and it keeps the spans they sent, or, for
// a benchmark, only counts what arrived.
type TraceReceiver struct {
	// URL is the endpoint to give OTEL_EXPORTER_OTLP_ENDPOINT.
	URL string

	keep     bool
	srv      *http.Server
	mu       sync.Mutex
	spans    []ReceivedSpan
	requests atomic.Int64
	bytes    atomic.Int64
}

// ReceivedSpan is one span as a process exported it.
type ReceivedSpan struct {
	TraceID, SpanID, ParentSpanID string // hex; ParentSpanID "" for a root
	Name                          string
	Kind                          tracepb.Span_SpanKind
	Service                       string // the resource's service.name
	PID                           int64  // the resource's process.pid
	Attributes                    map[string]any
	Links                         []SpanLink
	Error                         bool // status ERROR
	Start, End                    time.Time
}

// SpanLink is a link of a span to another.
type SpanLink struct{ TraceID, SpanID string }

// StartTraceReceiver listens on a free local port. keep: decode and keep
// every span (tests); otherwise only count requests and bytes (a sink for
// benchmarks, which must cost little beside what it measures).
func StartTraceReceiver(keep bool) (*TraceReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &TraceReceiver{URL: "http://" + ln.Addr().String(), keep: keep}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.export)
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// Close stops listening.
func (r *TraceReceiver) Close() { _ = r.srv.Close() }

// Spans is every span received so far.
func (r *TraceReceiver) Spans() []ReceivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ReceivedSpan(nil), r.spans...)
}

// Received is how many export requests and body bytes arrived.
func (r *TraceReceiver) Received() (requests, bytes int64) {
	return r.requests.Load(), r.bytes.Load()
}

// maxExportBytes bounds one export request's body.
const maxExportBytes = 64 << 20

func (r *TraceReceiver) export(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = http.MaxBytesReader(w, req.Body, maxExportBytes)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.requests.Add(1)
	r.bytes.Add(int64(len(b)))
	if r.keep {
		if req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "only application/x-protobuf", http.StatusUnsupportedMediaType)
			return
		}
		var msg collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &msg); err != nil {
			http.Error(w, fmt.Sprint("decode: ", err), http.StatusBadRequest)
			return
		}
		r.add(&msg)
	}
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (r *TraceReceiver) add(msg *collectortrace.ExportTraceServiceRequest) {
	var got []ReceivedSpan
	for _, rs := range msg.GetResourceSpans() {
		res := attributes(rs.GetResource().GetAttributes())
		service, _ := res["service.name"].(string)
		pid, _ := res["process.pid"].(int64)
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				span := ReceivedSpan{
					TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
					Name: s.GetName(), Kind: s.GetKind(), Service: service, PID: pid,
					Attributes: attributes(s.GetAttributes()),
					Error:      s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
					Start:      time.Unix(0, int64(s.GetStartTimeUnixNano())),
					End:        time.Unix(0, int64(s.GetEndTimeUnixNano())),
				}
				if p := s.GetParentSpanId(); len(p) > 0 {
					span.ParentSpanID = hex.EncodeToString(p)
				}
				for _, l := range s.GetLinks() {
					span.Links = append(span.Links, SpanLink{TraceID: hex.EncodeToString(l.GetTraceId()), SpanID: hex.EncodeToString(l.GetSpanId())})
				}
				got = append(got, span)
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
}

// attributes are OTLP key-values as Go values (string, int64, float64,
// bool; anything else as its text).
func attributes(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = v.IntValue
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = v.DoubleValue
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = v.BoolValue
		default:
			m[kv.GetKey()] = kv.GetValue().String()
		}
	}
	return m
}
