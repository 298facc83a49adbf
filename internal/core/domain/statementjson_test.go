package domain_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/catacloud/epoch/internal/core/domain"
)

// TestStatementClosedDataJSON: AppendJSON writes what encoding/json does,
// byte for byte, whatever the strings, times and lines.
func TestStatementClosedDataJSON(t *testing.T) {
	t.Parallel()
	zones := []*time.Location{time.UTC, time.FixedZone("odd", 3600+17), time.FixedZone("x", -5*3600)}
	if berlin, err := time.LoadLocation("Europe/Berlin"); err == nil {
		zones = append(zones, berlin)
	}
	rapid.Check(t, func(rt *rapid.T) {
		str := func(label string) string {
			return rapid.OneOf(rapid.StringMatching(`-?[0-9]{1,20}(\.[0-9]{1,18})?`), rapid.String()).Draw(rt, label)
		}
		at := func(label string) time.Time {
			sec := rapid.Int64Range(-70000000000, 260000000000).Draw(rt, label)
			ns := rapid.Int64Range(0, 999999999).Draw(rt, label+"_ns")
			return time.Unix(sec, ns).In(rapid.SampledFrom(zones).Draw(rt, label+"_zone"))
		}
		d := domain.StatementClosedData{
			OwnerID: uuid.UUID(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(rt, "owner")), ID: uuid.New(),
			PeriodStart: at("start"), PeriodEnd: at("end"), State: str("state"), ByteSeconds: str("bs"),
			GBHours: str("gbh"), Currency: str("cur"), PriceVersion: rapid.Int32().Draw(rt, "version"),
			Amount: str("amount"), AmountDue: str("due"), CoveredPosition: rapid.Int64().Draw(rt, "covered"),
			EventsSHA256: str("sha"), ClosedAt: at("closed"),
		}
		if n := rapid.IntRange(-1, 3).Draw(rt, "lines"); n >= 0 {
			d.Lines = []domain.StatementLine{}
			for range n {
				d.Lines = append(d.Lines, domain.StatementLine{Tier: rapid.Int().Draw(rt, "tier"),
					GBHours: str("line_gbh"), Price: str("price"), Amount: str("line_amount")})
			}
		}
		want, wantErr := json.Marshal(d)
		got, gotErr := d.AppendJSON([]byte("x"))
		if wantErr != nil {
			require.Error(rt, gotErr)
			return
		}
		require.NoError(rt, gotErr)
		require.Equal(rt, "x"+string(want), string(got))
	})
}
