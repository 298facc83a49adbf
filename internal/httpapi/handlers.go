package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/commandside/readmodel"
	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/platform/database"
)

const headerPosition = "Epoch-Position"

type fileInput struct {
	Name        *string         `json:"name"`
	SizeBytes   json.RawMessage `json:"size_bytes"`
	ContentType *string         `json:"content_type"`
}

type jobInput struct {
	Name *string `json:"name"`
}

type setFilesInput struct {
	FileIDs *[]string `json:"file_ids"`
}

func (in fileInput) command() (command.UploadFile, error) {
	name, err := requiredName(in.Name)
	if err != nil {
		return command.UploadFile{}, err
	}
	size, err := parseSize(in.SizeBytes)
	if err != nil {
		return command.UploadFile{}, err
	}
	var contentType string
	if in.ContentType != nil {
		contentType = *in.ContentType
	}
	if contentType, err = domain.ContentType(contentType); err != nil {
		return command.UploadFile{}, err
	}
	return command.UploadFile{Name: name, SizeBytes: size, ContentType: contentType}, nil
}

func position(p int64) string { return strconv.FormatInt(p, 10) }

func etag(version int32) string { return `"` + strconv.FormatInt(int64(version), 10) + `"` }

// jobAnswer reads the job the command wrote, as a preview with its ETag
// and the command's position.
func jobAnswer(status int, owner uuid.UUID, out command.Outcome, location bool) readAnswer {
	return func(ctx context.Context, db database.DBTX) (answer, error) {
		job, err := readmodel.GetJob(ctx, db, owner, out.ID)
		if err != nil {
			return answer{}, err
		}
		h := map[string]string{headerPosition: position(out.Position), "ETag": etag(job.Version)}
		if location {
			h["Location"] = "/v1/jobs/" + job.ID.String()
		}
		return jsonAnswer(status, job, h)
	}
}

// fileAnswer reads the new file with its Location and the command's
// position.
func fileAnswer(owner uuid.UUID, out command.Outcome) readAnswer {
	return func(ctx context.Context, db database.DBTX) (answer, error) {
		file, err := readmodel.GetFile(ctx, db, owner, out.ID)
		if err != nil {
			return answer{}, err
		}
		return jsonAnswer(http.StatusCreated, file, map[string]string{
			headerPosition: position(out.Position),
			"Location":     "/v1/files/" + file.ID.String(),
		})
	}
}

func deletedAnswer(out command.Outcome) answer {
	return answer{Status: http.StatusNoContent, Header: map[string]string{headerPosition: position(out.Position)}}
}

// jobRef reads {id} and If-Match of a job command.
func jobRef(r *http.Request, user uuid.UUID) (command.JobRef, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return command.JobRef{}, err
	}
	ifMatch, err := parseIfMatch(r)
	if err != nil {
		return command.JobRef{}, err
	}
	return command.JobRef{OwnerID: user, JobID: id, IfMatch: ifMatch}, nil
}

// POST /v1/files
func (s *server) uploadFile(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	body, in, err := readJSON[fileInput](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	upload, err := in.command()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.runCommand(w, r, user, body, func(ctx context.Context, tx *database.Tx) (readAnswer, error) {
		out, err := s.cfg.Commands.UploadFile(ctx, tx, user, upload)
		if err != nil {
			return nil, err
		}
		return fileAnswer(user, out), nil
	})
}

// DELETE /v1/files/{id}
func (s *server) deleteFile(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	id, err := pathID(r, "id")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.runCommand(w, r, user, nil, func(ctx context.Context, tx *database.Tx) (readAnswer, error) {
		out, err := s.cfg.Commands.DeleteFile(ctx, tx, user, id)
		if err != nil {
			return nil, err
		}
		return ready(deletedAnswer(out)), nil
	})
}

// POST /v1/jobs
func (s *server) createJob(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	body, in, err := readJSON[jobInput](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name, err := requiredName(in.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.runCommand(w, r, user, body, func(ctx context.Context, tx *database.Tx) (readAnswer, error) {
		out, err := s.cfg.Commands.CreateJob(ctx, tx, user, name)
		if err != nil {
			return nil, err
		}
		return jobAnswer(http.StatusCreated, user, out, true), nil
	})
}

// DELETE /v1/jobs/{id}
func (s *server) deleteJob(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	ref, err := jobRef(r, user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.runCommand(w, r, user, nil, func(ctx context.Context, tx *database.Tx) (readAnswer, error) {
		out, err := s.cfg.Commands.DeleteJob(ctx, tx, ref)
		if err != nil {
			return nil, err
		}
		return ready(deletedAnswer(out)), nil
	})
}

// PUT /v1/jobs/{id}/files/{file_id}
func (s *server) linkFile(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	s.jobFileCommand(w, r, user, s.cfg.Commands.LinkFile)
}

// DELETE /v1/jobs/{id}/files/{file_id}
func (s *server) unlinkFile(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	s.jobFileCommand(w, r, user, s.cfg.Commands.UnlinkFile)
}

func (s *server) jobFileCommand(w http.ResponseWriter, r *http.Request, user uuid.UUID,
	cmd func(context.Context, *database.Tx, command.JobRef, uuid.UUID) (command.Outcome, error)) {
	ref, err := jobRef(r, user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	fileID, err := pathID(r, "file_id")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.runCommand(w, r, user, nil, func(ctx context.Context, tx *database.Tx) (readAnswer, error) {
		out, err := cmd(ctx, tx, ref, fileID)
		if err != nil {
			return nil, err
		}
		return jobAnswer(http.StatusOK, user, out, false), nil
	})
}

// PUT /v1/jobs/{id}/files
func (s *server) setJobFiles(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	ref, err := jobRef(r, user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	body, in, err := readJSON[setFilesInput](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ids, err := parseFileIDs(in.FileIDs)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.runCommand(w, r, user, body, func(ctx context.Context, tx *database.Tx) (readAnswer, error) {
		out, err := s.cfg.Commands.SetJobFiles(ctx, tx, ref, ids)
		if err != nil {
			return nil, err
		}
		return jobAnswer(http.StatusOK, user, out, false), nil
	})
}

// GET /v1/files
func (s *server) listFiles(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	servePage(s, w, r, user, readmodel.ListFiles)
}

// GET /v1/files/{id}
func (s *server) getFile(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	id, err := pathID(r, "id")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	file, err := readmodel.GetFile(ctx, s.cfg.Pool, user, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set(headerPosition, position(file.Position))
	writeJSON(w, http.StatusOK, file)
}

// GET /v1/jobs
func (s *server) listJobs(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	servePage(s, w, r, user, readmodel.ListJobs)
}

// servePage answers a list: ?limit= and ?cursor= read, one page of the
// caller's items written.
func servePage[T any](s *server, w http.ResponseWriter, r *http.Request, user uuid.UUID,
	list func(context.Context, database.DBTX, uuid.UUID, readmodel.Cursor, int32) (readmodel.Page[T], error)) {
	cursor, limit, err := parsePage(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	page, err := list(ctx, s.cfg.Pool, user, cursor, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// GET /v1/jobs/{id}
func (s *server) getJob(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	id, err := pathID(r, "id")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	var preview *readmodel.Preview
	err = database.Pipeline(ctx, s.cfg.Pool, func(db *database.Conn) (err error) {
		preview, err = readmodel.ReadPreview(ctx, db, user, id)
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set(headerPosition, position(preview.Position()))
	w.Header().Set("ETag", etag(preview.Version()))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	// Written as it is encoded: a full job's answer is a few MiB, and many
	// callers may read one at once.
	if err := preview.WriteJSON(w); err == nil {
		_, _ = w.Write([]byte("\n"))
	}
}
