package domain

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// AppendJSON appends a statement.closed event's data to b as
// encoding/json writes it from its fields and tags, byte for byte, without
// reflection (eventstore.New uses it): a close writes thousands at once. A
// string or time it cannot write plainly goes through encoding/json.
func (d StatementClosedData) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"owner_id":`...)
	b = appendUUID(b, d.OwnerID)
	b = append(b, `,"id":`...)
	b = appendUUID(b, d.ID)
	var err error
	if b, err = appendTime(append(b, `,"period_start":`...), d.PeriodStart); err != nil {
		return nil, err
	}
	if b, err = appendTime(append(b, `,"period_end":`...), d.PeriodEnd); err != nil {
		return nil, err
	}
	b = appendString(append(b, `,"state":`...), d.State)
	b = appendString(append(b, `,"byte_seconds":`...), d.ByteSeconds)
	b = appendString(append(b, `,"gb_hours":`...), d.GBHours)
	b = appendString(append(b, `,"currency":`...), d.Currency)
	b = strconv.AppendInt(append(b, `,"price_version":`...), int64(d.PriceVersion), 10)
	b = append(b, `,"lines":`...)
	if d.Lines == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, l := range d.Lines {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(append(b, `{"tier":`...), int64(l.Tier), 10)
			b = appendString(append(b, `,"gb_hours":`...), l.GBHours)
			b = appendString(append(b, `,"price_per_gb_hour":`...), l.Price)
			b = appendString(append(b, `,"amount":`...), l.Amount)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = appendString(append(b, `,"amount":`...), d.Amount)
	b = appendString(append(b, `,"amount_due":`...), d.AmountDue)
	b = strconv.AppendInt(append(b, `,"covered_position":`...), d.CoveredPosition, 10)
	b = appendString(append(b, `,"events_sha256":`...), d.EventsSHA256)
	if b, err = appendTime(append(b, `,"closed_at":`...), d.ClosedAt); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

func appendUUID(b []byte, id uuid.UUID) []byte {
	b = append(b, '"')
	var s [36]byte
	hexUUID(s[:], id)
	b = append(b, s[:]...)
	return append(b, '"')
}

// hexUUID writes id's 36-character form into s, as uuid.UUID.String does.
func hexUUID(s []byte, id uuid.UUID) {
	const digits = "0123456789abcdef"
	j := 0
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = digits[c>>4], digits[c&0xf]
		j += 2
	}
}

// appendString writes s quoted. Only printable ASCII that encoding/json
// leaves as it is (no quote, backslash or HTML character) is written
// here; anything else goes through encoding/json, so the escapes are its.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendTime writes t as time.Time.MarshalJSON does (RFC 3339 with
// nanoseconds, trailing zeros dropped). A year outside [0, 9999] or an
// offset that is not whole minutes under a day, which it refuses or
// checks, go through it.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	_, offset := t.Zone()
	if y := t.Year(); y < 0 || y > 9999 || offset%60 != 0 || offset <= -24*3600 || offset >= 24*3600 {
		q, err := t.MarshalJSON()
		if err != nil {
			return nil, err
		}
		return append(b, q...), nil
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}
