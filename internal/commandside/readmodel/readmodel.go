// Package readmodel reads the inline projections (files, jobs, job_files)
// into the shapes the API answers with. Every read is scoped to an owner:
// another user's resource is not found, exactly like a missing one.
package readmodel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// File is the API's file.
type File struct {
	ID          uuid.UUID `json:"id"`
	Name        string    `json:"name"`
	SizeBytes   int64     `json:"size_bytes"`
	ContentType string    `json:"content_type"`
	CreatedAt   time.Time `json:"created_at"`
	Position    int64     `json:"position"`

	createdPosition int64
}

// JobFile is one file in a job preview.
type JobFile struct {
	ID        uuid.UUID `json:"id"`
	Name      string    `json:"name"`
	SizeBytes int64     `json:"size_bytes"`
}

// Job is a job preview. Files is nil in list items, where it is left out.
// TotalBytes is a JSON integer that may exceed 64 bits.
type Job struct {
	ID         uuid.UUID   `json:"id"`
	Name       string      `json:"name"`
	Version    int32       `json:"version"`
	Files      *[]JobFile  `json:"files,omitempty"`
	FileCount  int64       `json:"file_count"`
	TotalBytes json.Number `json:"total_bytes"`
	Position   int64       `json:"position"`

	createdPosition int64
}

// Page is a list page: newest first, NextCursor nil on the last page.
type Page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// GetFile reads one file of owner.
func GetFile(ctx context.Context, db database.DBTX, owner, id uuid.UUID) (File, error) {
	row, err := database.One(dbsqlc.New().FileGet(ctx, db, []*dbsqlc.FileGetParams{{ID: id, OwnerID: owner}}))
	if err != nil {
		return File{}, fmt.Errorf("get file: %w", err)
	}
	return fileFrom(row), nil
}

// ListFiles reads a page of owner's files.
func ListFiles(ctx context.Context, db database.DBTX, owner uuid.UUID, cursor Cursor, limit int32) (Page[File], error) {
	rows, err := dbsqlc.New().FileList(ctx, db, &dbsqlc.FileListParams{OwnerID: owner, Before: cursor.before(), MaxCount: limit + 1})
	if err != nil {
		return Page[File]{}, fmt.Errorf("list files: %w", err)
	}
	items := make([]File, len(rows))
	for i, r := range rows {
		items[i] = fileFrom(r)
	}
	return page(items, limit, func(f File) int64 { return f.createdPosition }), nil
}

// GetJob reads owner's job preview with its files in link order (see
// ReadPreview).
func GetJob(ctx context.Context, db database.DBTX, owner, id uuid.UUID) (Job, error) {
	p, err := ReadPreview(ctx, db, owner, id)
	if err != nil {
		return Job{}, err
	}
	return previewFrom(p.row, p.files), nil
}

// Preview is a job preview as read, written out by WriteJSON straight from
// its rows: a job of 10,000 files is a few MiB of rows, and building its
// answer first (a Job, then its JSON) would hold that twice more for every
// request reading it.
type Preview struct {
	row   *dbsqlc.JobGetRow
	files []*dbsqlc.JobFileListRow
}

// Version is the job's version (its ETag).
func (p *Preview) Version() int32 { return p.row.Version }

// Position is the job's position (its Epoch-Position).
func (p *Preview) Position() int64 { return p.row.Position }

// WriteJSON writes the preview byte for byte as json.Marshal writes the
// Job GetJob returns, one file at a time.
func (p *Preview) WriteJSON(w io.Writer) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// value appends v as json.Marshal encodes it (Encode adds a newline).
	value := func(v any) {
		if err := enc.Encode(v); err == nil {
			buf.Truncate(buf.Len() - 1)
		}
	}
	flush := func() error {
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		return err
	}
	r := p.row
	buf.WriteString(`{"id":`)
	value(r.ID)
	buf.WriteString(`,"name":`)
	value(r.Name)
	buf.WriteString(`,"version":`)
	buf.WriteString(strconv.FormatInt(int64(r.Version), 10))
	buf.WriteString(`,"files":[`)
	for i, f := range p.files {
		if i > 0 {
			buf.WriteByte(',')
		}
		value(JobFile{ID: f.FileID, Name: f.Name, SizeBytes: f.SizeBytes})
		if buf.Len() >= 32<<10 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	buf.WriteString(`],"file_count":`)
	buf.WriteString(strconv.FormatInt(r.FileCount, 10))
	buf.WriteString(`,"total_bytes":`)
	value(json.Number(r.TotalBytes))
	buf.WriteString(`,"position":`)
	buf.WriteString(strconv.FormatInt(r.Position, 10))
	buf.WriteByte('}')
	return flush()
}

// ReadPreview reads owner's job preview with its files in link order: two
// statements, queued before either is read, so one round trip on a Tx or
// a database.Pipeline connection.
func ReadPreview(ctx context.Context, db database.DBTX, owner, id uuid.UUID) (*Preview, error) {
	q := dbsqlc.New()
	job := q.JobGet(ctx, db, []*dbsqlc.JobGetParams{{ID: id, OwnerID: owner}})
	files := q.JobFileList(ctx, db, []*dbsqlc.JobFileListParams{{JobID: id, OwnerID: owner}})
	row, err := database.One(job)
	if err != nil {
		_ = files.Close() // on a pool, its connection goes back
		return nil, fmt.Errorf("get job: %w", err)
	}
	list, err := database.Many(files)
	if err != nil {
		return nil, fmt.Errorf("get job files: %w", err)
	}
	return &Preview{row: row, files: list}, nil
}

// previewFrom makes a job preview of its row and its files.
func previewFrom(row *dbsqlc.JobGetRow, files []*dbsqlc.JobFileListRow) Job {
	list := make([]JobFile, len(files))
	for i, f := range files {
		list[i] = JobFile{ID: f.FileID, Name: f.Name, SizeBytes: f.SizeBytes}
	}
	job := jobFrom(row.ID, row.Name, row.Version, row.FileCount, row.TotalBytes, row.Position, row.CreatedPosition)
	job.Files = &list
	return job
}

// ListJobs reads a page of owner's jobs, previews without files.
func ListJobs(ctx context.Context, db database.DBTX, owner uuid.UUID, cursor Cursor, limit int32) (Page[Job], error) {
	rows, err := dbsqlc.New().JobList(ctx, db, &dbsqlc.JobListParams{OwnerID: owner, Before: cursor.before(), MaxCount: limit + 1})
	if err != nil {
		return Page[Job]{}, fmt.Errorf("list jobs: %w", err)
	}
	items := make([]Job, len(rows))
	for i, r := range rows {
		items[i] = jobFrom(r.ID, r.Name, r.Version, r.FileCount, r.TotalBytes, r.Position, r.CreatedPosition)
	}
	return page(items, limit, func(j Job) int64 { return j.createdPosition }), nil
}

func fileFrom(r *dbsqlc.File) File {
	return File{ID: r.ID, Name: r.Name, SizeBytes: r.SizeBytes, ContentType: r.ContentType,
		CreatedAt: r.CreatedAt.UTC(), Position: r.Position, createdPosition: r.CreatedPosition}
}

func jobFrom(id uuid.UUID, name string, version int32, count int64, bytes string, position, created int64) Job {
	return Job{ID: id, Name: name, Version: version, FileCount: count, TotalBytes: json.Number(bytes),
		Position: position, createdPosition: created}
}

func page[T any](items []T, limit int32, key func(T) int64) Page[T] {
	p := Page[T]{Items: items}
	if int32(len(items)) > limit {
		p.Items = items[:limit]
		next := Cursor{After: key(p.Items[limit-1])}.String()
		p.NextCursor = &next
	}
	return p
}

// Cursor marks where the next page starts: below the creation position of
// the last item of the page before. The zero Cursor is the first page.
type Cursor struct {
	After int64
}

func (c Cursor) before() int64 {
	if c.After <= 0 {
		return math.MaxInt64
	}
	return c.After
}
