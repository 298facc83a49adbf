package domain

import (
	"github.com/google/uuid"
)

// NewFile decides the upload of a new file.
func NewFile(id, owner uuid.UUID, name string, size int64, contentType string) ([]Change, error) {
	if err := CheckName("name", name); err != nil {
		return nil, err
	}
	if err := CheckSize(size); err != nil {
		return nil, err
	}
	ct, err := ContentType(contentType)
	if err != nil {
		return nil, err
	}
	return []Change{{StreamFile, id, FileUploaded, FileUploadedData{OwnerID: owner, Name: name, SizeBytes: size, ContentType: ct}}}, nil
}

// DeleteFile decides a file's deletion: first it leaves every job that has
// it, so each job's stream alone rebuilds its file list, then it is deleted.
func DeleteFile(id, owner uuid.UUID, jobsWithFile []uuid.UUID) []Change {
	changes := make([]Change, 0, len(jobsWithFile)+1)
	for _, job := range jobsWithFile {
		changes = append(changes, Change{StreamJob, job, JobFileUnlinked, JobFileUnlinkedData{FileID: id}})
	}
	return append(changes, Change{StreamFile, id, FileDeleted, FileDeletedData{OwnerID: owner}})
}

// NewJob decides the creation of a job.
func NewJob(id, owner uuid.UUID, name string) ([]Change, error) {
	if err := CheckName("name", name); err != nil {
		return nil, err
	}
	return []Change{{StreamJob, id, JobCreated, JobCreatedData{OwnerID: owner, Name: name}}}, nil
}

// DeleteJob decides a job's deletion.
func DeleteJob(id uuid.UUID) []Change {
	return []Change{{StreamJob, id, JobDeleted, JobDeletedData{}}}
}

// Link decides linking a file: nothing when it is linked already.
func Link(job, file uuid.UUID, linked bool) []Change {
	if linked {
		return nil
	}
	return []Change{{StreamJob, job, JobFileLinked, JobFileLinkedData{FileID: file}}}
}

// Unlink decides unlinking a file: nothing when it is not linked.
func Unlink(job, file uuid.UUID, linked bool) []Change {
	if !linked {
		return nil
	}
	return []Change{{StreamJob, job, JobFileUnlinked, JobFileUnlinkedData{FileID: file}}}
}

// SetFiles decides making a job's files exactly want: unlink what is
// linked but not wanted (in link order), then link what is wanted but not
// linked (in the order given). want must not repeat an id.
func SetFiles(job uuid.UUID, linked, want []uuid.UUID) ([]Change, error) {
	wanted := distinct[uuid.UUID]{field: "file_ids", seen: make(map[uuid.UUID]int, len(want))}
	for i, id := range want {
		if err := wanted.add(i, id); err != nil {
			return nil, err
		}
	}
	has := make(map[uuid.UUID]bool, len(linked))
	var changes []Change
	for _, id := range linked {
		has[id] = true
		if _, ok := wanted.seen[id]; !ok {
			changes = append(changes, Change{StreamJob, job, JobFileUnlinked, JobFileUnlinkedData{FileID: id}})
		}
	}
	for _, id := range want {
		if !has[id] {
			changes = append(changes, Change{StreamJob, job, JobFileLinked, JobFileLinkedData{FileID: id}})
		}
	}
	return changes, nil
}
