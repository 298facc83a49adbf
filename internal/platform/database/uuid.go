package database

import (
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"
)

// uuidCodec is pgx-google-uuid's codec with a direct scan into *uuid.UUID.
// pgx plans a scan into a sql.Scanner before it tries the wrappers
// pgx-google-uuid registers, and uuid.UUID is one: each uuid read was
// formatted as a string by pgx and parsed back by uuid.UUID.Scan, a
// seventh of the api's CPU while it set 1,000 files on a job.
type uuidCodec struct {
	pgxuuid.UUIDCodec
}

// PlanScan implements pgtype.Codec: the 16 bytes of the binary format go
// straight into a *uuid.UUID; anything else is planned as before.
func (c uuidCodec) PlanScan(m *pgtype.Map, oid uint32, format int16, target any) pgtype.ScanPlan {
	if _, ok := target.(*uuid.UUID); ok && format == pgtype.BinaryFormatCode {
		return scanUUIDBinary{}
	}
	return c.UUIDCodec.PlanScan(m, oid, format, target)
}

type scanUUIDBinary struct{}

func (scanUUIDBinary) Scan(src []byte, dst any) error {
	if src == nil {
		return fmt.Errorf("cannot scan NULL into %T", dst)
	}
	if len(src) != 16 {
		return fmt.Errorf("invalid length for uuid: %d", len(src))
	}
	copy(dst.(*uuid.UUID)[:], src)
	return nil
}

// registerUUID teaches m google/uuid's UUID as a native uuid, both ways.
func registerUUID(m *pgtype.Map) {
	pgxuuid.Register(m)
	m.RegisterType(&pgtype.Type{Name: "uuid", OID: pgtype.UUIDOID, Codec: uuidCodec{}})
}
