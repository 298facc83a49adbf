package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"time"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// PriceVersion is a price version of the book: graduated tiers over one
// period's GB-hours. Version 0 is the configured flat price
// (EPOCH_PRICE_PER_GB_HOUR, EPOCH_CURRENCY), which prices every period no
// stored version does.
type PriceVersion struct {
	Version       int32              `json:"version"`
	EffectiveFrom time.Time          `json:"effective_from"`
	Currency      string             `json:"currency"`
	Tiers         []domain.PriceTier `json:"tiers"`
	Position      int64              `json:"-"`
	// upTo[i] is tier i's bound in byte-seconds (nil for the last), price[i]
	// its price per GB-hour.
	upTo  []*big.Rat
	price []*big.Rat
}

// NewPriceVersion makes a version from its tiers (canonical decimals, as
// domain.ParsePrice gives them).
func NewPriceVersion(version int32, data domain.PriceScheduledData) (PriceVersion, error) {
	v := PriceVersion{Version: version, EffectiveFrom: data.EffectiveFrom.UTC(), Currency: data.Currency, Tiers: data.Tiers}
	if len(data.Tiers) == 0 {
		return v, fmt.Errorf("billing: price version %d has no tiers", version)
	}
	for i, t := range data.Tiers {
		p, ok := parseDecimal(t.Price)
		if !ok || p.Sign() < 0 {
			return v, fmt.Errorf("billing: price version %d tier %d: price %q", version, i+1, t.Price)
		}
		v.price = append(v.price, p)
		if t.UpTo == nil {
			if i != len(data.Tiers)-1 {
				return v, fmt.Errorf("billing: price version %d tier %d has no bound", version, i+1)
			}
			v.upTo = append(v.upTo, nil)
			continue
		}
		b, ok := parseDecimal(*t.UpTo)
		if !ok {
			return v, fmt.Errorf("billing: price version %d tier %d: bound %q", version, i+1, *t.UpTo)
		}
		v.upTo = append(v.upTo, b.Mul(b, bytesPerGBHour))
	}
	return v, nil
}

// ParsePrice makes the configured flat price, version 0, from
// EPOCH_PRICE_PER_GB_HOUR (a non-negative decimal such as "0.00003") and
// EPOCH_CURRENCY (an ISO 4217 code).
func ParsePrice(perGBHour, currency string) (PriceVersion, error) {
	r, ok := parseDecimal(perGBHour)
	if !ok || r.Sign() < 0 {
		return PriceVersion{}, fmt.Errorf("billing: price per GB-hour %q is not a non-negative decimal", perGBHour)
	}
	if err := domain.CheckCurrency(currency); err != nil {
		return PriceVersion{}, fmt.Errorf("billing: %w", err)
	}
	canonical, err := domain.CanonicalDecimal("price", perGBHour)
	if err != nil {
		return PriceVersion{}, fmt.Errorf("billing: %w", err)
	}
	return NewPriceVersion(0, domain.PriceScheduledData{Currency: currency, Tiers: []domain.PriceTier{{Price: canonical}}})
}

// PriceBook is every stored price version, in version order, and the
// configured price that stands in for none.
type PriceBook struct {
	Versions []PriceVersion
	Fallback PriceVersion
}

// ReadPriceBook reads the price_book stream (a handful of events, by the
// stream's key).
func ReadPriceBook(ctx context.Context, db database.DBTX, fallback PriceVersion) (PriceBook, error) {
	rows, err := database.Many(dbsqlc.New().PriceBookList(ctx, db, []*dbsqlc.PriceBookListParams{domainPriceStream()}))
	if err != nil {
		return PriceBook{}, fmt.Errorf("billing: read the price book: %w", err)
	}
	return priceBook(rows, fallback)
}

// PriceVersions lists the price book's versions above afterVersion,
// oldest first, at most maxCount of them: GET /v1/admin/prices's pages.
func PriceVersions(ctx context.Context, db database.DBTX, afterVersion, maxCount int32) ([]PriceVersion, error) {
	rows, err := database.Many(dbsqlc.New().PriceBookList(ctx, db, []*dbsqlc.PriceBookListParams{{
		StreamID: domain.PriceBookStream, AfterVersion: afterVersion, MaxCount: maxCount}}))
	if err != nil {
		return nil, fmt.Errorf("billing: list the price book: %w", err)
	}
	return priceVersions(rows)
}

func domainPriceStream() *dbsqlc.PriceBookListParams {
	return &dbsqlc.PriceBookListParams{StreamID: domain.PriceBookStream, AfterVersion: 0, MaxCount: 1 << 30}
}

func priceBook(rows []*dbsqlc.PriceBookListRow, fallback PriceVersion) (PriceBook, error) {
	versions, err := priceVersions(rows)
	return PriceBook{Fallback: fallback, Versions: versions}, err
}

func priceVersions(rows []*dbsqlc.PriceBookListRow) ([]PriceVersion, error) {
	out := make([]PriceVersion, 0, len(rows))
	for _, r := range rows {
		v, err := priceVersionOf(r.Version, r.Data, r.Position)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// priceVersionOf decodes a price.scheduled event's data.
func priceVersionOf(version int32, data []byte, position int64) (PriceVersion, error) {
	var d domain.PriceScheduledData
	if err := json.Unmarshal(data, &d); err != nil {
		return PriceVersion{}, fmt.Errorf("billing: price version %d: %w", version, err)
	}
	v, err := NewPriceVersion(version, d)
	v.Position = position
	return v, err
}

// For is the version that prices the period starting at start: of the
// versions effective at or before it, the one effective last (the higher
// version of two effective at once); the fallback when there is none.
func (b PriceBook) For(start time.Time) PriceVersion {
	best := -1
	for i, v := range b.Versions {
		if v.EffectiveFrom.After(start) {
			continue
		}
		if best < 0 || v.EffectiveFrom.After(b.Versions[best].EffectiveFrom) ||
			(v.EffectiveFrom.Equal(b.Versions[best].EffectiveFrom) && v.Version > b.Versions[best].Version) {
			best = i
		}
	}
	if best < 0 {
		return b.Fallback
	}
	return b.Versions[best]
}

// units is what byteSeconds of one period cost under v, times 3.6e12 (the
// byte-seconds of a GB-hour), so it is an exact decimal: the byte-seconds
// each tier takes times its price, summed. It also returns each tier's
// byte-seconds and units.
func (v PriceVersion) units(byteSeconds *big.Rat) (total *big.Rat, tierBS, tierUnits []*big.Rat) {
	total = new(big.Rat)
	lower := new(big.Rat)
	for i, price := range v.price {
		share := new(big.Rat).Sub(byteSeconds, lower)
		if v.upTo[i] != nil && byteSeconds.Cmp(v.upTo[i]) > 0 {
			share.Sub(v.upTo[i], lower)
		}
		if share.Sign() < 0 {
			share.SetInt64(0)
		}
		u := new(big.Rat).Mul(share, price)
		total.Add(total, u)
		tierBS, tierUnits = append(tierBS, share), append(tierUnits, u)
		if v.upTo[i] != nil {
			lower = v.upTo[i]
		}
	}
	return total, tierBS, tierUnits
}
