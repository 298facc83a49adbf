package domain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/text/currency"
)

// PriceBookStream is the id of the one price_book stream: its versions are
// the price versions, in order.
var PriceBookStream = uuid.MustParse("6b1f0d3a-9c6e-4e0b-8a55-5d9c2f1e7a01")

// MaxPriceTiers is the most tiers one price version has.
const MaxPriceTiers = 100

// Decimals in prices and tier bounds: a plain decimal of at most
// maxDecimalDigits digits before the point and maxDecimalFraction after it,
// so every amount billing derives from them stays a bounded exact decimal.
const (
	maxDecimalDigits   = 30
	maxDecimalFraction = 18
)

// PriceTier is one graduated tier: the GB-hours of a period up to UpTo (nil
// for the last tier: every GB-hour past the tier before) cost Price each.
// Both are canonical decimal strings (CanonicalDecimal).
type PriceTier struct {
	UpTo  *string `json:"up_to_gb_hours"`
	Price string  `json:"price_per_gb_hour"`
}

// PriceScheduledData is the data of price.scheduled: a price version, which
// prices every billing period that starts at or after EffectiveFrom until
// a version effective later does.
type PriceScheduledData struct {
	EffectiveFrom time.Time   `json:"effective_from"`
	Currency      string      `json:"currency"`
	Tiers         []PriceTier `json:"tiers"`
}

// StatementLine is one tier's share of a statement.
type StatementLine struct {
	Tier    int    `json:"tier"`
	GBHours string `json:"gb_hours"`
	Price   string `json:"price_per_gb_hour"`
	Amount  string `json:"amount"`
}

// StatementClosedData is the data of statement.closed: the closed
// statement, as GET /v1/statements/{id} answers it (less its position,
// which is this event's), and its owner.
type StatementClosedData struct {
	OwnerID         uuid.UUID       `json:"owner_id"`
	ID              uuid.UUID       `json:"id"`
	PeriodStart     time.Time       `json:"period_start"`
	PeriodEnd       time.Time       `json:"period_end"`
	State           string          `json:"state"`
	ByteSeconds     string          `json:"byte_seconds"`
	GBHours         string          `json:"gb_hours"`
	Currency        string          `json:"currency"`
	PriceVersion    int32           `json:"price_version"`
	Lines           []StatementLine `json:"lines"`
	Amount          string          `json:"amount"`
	AmountDue       string          `json:"amount_due"`
	CoveredPosition int64           `json:"covered_position"`
	EventsSHA256    string          `json:"events_sha256"`
	ClosedAt        time.Time       `json:"closed_at"`
}

// statementNamespace is the UUIDv5 namespace of statement ids.
var statementNamespace = uuid.MustParse("0d2b8f4e-5a71-4c3e-9f0a-7e6b1c9d4a22")

// StatementID is the id of owner's statement for the period starting at
// periodStart, and the id of its statement stream: one statement per owner
// and period, whoever closes it.
func StatementID(owner uuid.UUID, periodStart time.Time) uuid.UUID {
	var name [24]byte
	copy(name[:16], owner[:])
	us := periodStart.UTC().UnixMicro()
	for i := range 8 {
		name[16+i] = byte(us >> (56 - 8*i))
	}
	return uuid.NewSHA1(statementNamespace, name[:])
}

// PriceInput is a price version as POST /v1/admin/prices takes it: decimals
// as JSON strings or numbers, the last tier's bound null.
type PriceInput struct {
	EffectiveFrom *string           `json:"effective_from"`
	Currency      *string           `json:"currency"`
	Tiers         *[]PriceTierInput `json:"tiers"`
}

// PriceTierInput is one tier of a PriceInput.
type PriceTierInput struct {
	UpTo  json.RawMessage `json:"up_to_gb_hours"`
	Price json.RawMessage `json:"price_per_gb_hour"`
}

// ParsePrice applies the price book's input rules: effective_from an RFC
// 3339 time within years 0001–9999; currency an ISO 4217 code (upper case);
// 1 to MaxPriceTiers tiers, each with a price ≥ 0 and, but for the last,
// whose bound is null, a bound above the tier before's (the first above 0).
// Whether effective_from is still to come is the command's to check, by the
// database's clock.
func ParsePrice(in PriceInput) (PriceScheduledData, error) {
	var out PriceScheduledData
	if in.EffectiveFrom == nil {
		return out, &RuleError{"effective_from", "is required (RFC 3339, e.g. 2027-01-01T00:00:00Z)"}
	}
	at, err := parseBound("effective_from", *in.EffectiveFrom)
	if err != nil {
		return out, &RuleError{"effective_from", strings.TrimPrefix(err.Error(), ErrInvalidPeriod.Error()+": effective_from ")}
	}
	out.EffectiveFrom = at
	if in.Currency == nil {
		return out, &RuleError{"currency", "is required (an ISO 4217 code such as USD)"}
	}
	if err := CheckCurrency(*in.Currency); err != nil {
		return out, err
	}
	out.Currency = *in.Currency
	if in.Tiers == nil || len(*in.Tiers) == 0 {
		return out, &RuleError{"tiers", "is required: at least one tier"}
	}
	tiers := *in.Tiers
	if len(tiers) > MaxPriceTiers {
		return out, &RuleError{"tiers", fmt.Sprintf("must hold at most %d tiers, not %d", MaxPriceTiers, len(tiers))}
	}
	prevBound := "0"
	for i, t := range tiers {
		field := fmt.Sprintf("tiers[%d]", i)
		if isNull(t.Price) {
			return out, &RuleError{field + ".price_per_gb_hour", "is required"}
		}
		price, err := ParseDecimal(field+".price_per_gb_hour", t.Price)
		if err != nil {
			return out, err
		}
		tier := PriceTier{Price: price}
		last := i == len(tiers)-1
		switch {
		case last && !isNull(t.UpTo):
			return out, &RuleError{field + ".up_to_gb_hours", "must be null: the last tier takes every GB-hour past the one before"}
		case !last && isNull(t.UpTo):
			return out, &RuleError{field + ".up_to_gb_hours", "is required: only the last tier's is null"}
		case !last:
			bound, err := ParseDecimal(field+".up_to_gb_hours", t.UpTo)
			if err != nil {
				return out, err
			}
			if CompareDecimals(bound, prevBound) <= 0 {
				return out, &RuleError{field + ".up_to_gb_hours", fmt.Sprintf("must be above %s: tier bounds rise", prevBound)}
			}
			prevBound = bound
			tier.UpTo = &bound
		}
		out.Tiers = append(out.Tiers, tier)
	}
	return out, nil
}

// CheckCurrency accepts an ISO 4217 currency code, in upper case.
func CheckCurrency(code string) error {
	if len(code) != 3 || strings.ToUpper(code) != code {
		return &RuleError{"currency", fmt.Sprintf("must be an ISO 4217 code of three upper-case letters, not %q", Excerpt(code))}
	}
	if _, err := currency.ParseISO(code); err != nil {
		return &RuleError{"currency", fmt.Sprintf("%q is not an ISO 4217 currency code", code)}
	}
	return nil
}

// MinorUnitDecimals is how many decimals the currency's minor unit has
// (ISO 4217: 2 for USD and EUR, 0 for JPY, 3 for BHD).
func MinorUnitDecimals(code string) (int, error) {
	u, err := currency.ParseISO(code)
	if err != nil {
		return 0, fmt.Errorf("currency %q: %w", code, err)
	}
	scale, _ := currency.Standard.Rounding(u)
	return scale, nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// ParseDecimal reads a non-negative decimal given as a JSON string ("0.5")
// or number (0.5), exactly, and returns it in canonical form.
func ParseDecimal(field string, raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	var s string
	if len(raw) > 0 && raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", &RuleError{field, "must be a decimal"}
		}
	} else {
		s = string(raw)
	}
	return CanonicalDecimal(field, s)
}

// CanonicalDecimal checks s is a plain non-negative decimal (digits, at most
// one point; no sign, exponent or spaces) of bounded size, and writes it
// without leading zeros before the point or trailing zeros after it ("0.50"
// → "0.5", "007" → "7", "1." is refused).
func CanonicalDecimal(field, s string) (string, error) {
	if strings.HasPrefix(s, "-") {
		return "", &RuleError{field, "must not be negative"}
	}
	whole, frac, hasPoint := strings.Cut(s, ".")
	bad := whole == "" || (hasPoint && frac == "")
	for _, c := range whole + frac {
		if c < '0' || c > '9' {
			bad = true
		}
	}
	if bad {
		return "", &RuleError{field, fmt.Sprintf("must be a plain decimal such as \"0.00003\", not %s", Excerpt(s))}
	}
	whole = strings.TrimLeft(whole, "0")
	frac = strings.TrimRight(frac, "0")
	if len(whole) > maxDecimalDigits || len(frac) > maxDecimalFraction {
		return "", &RuleError{field, fmt.Sprintf("must have at most %d digits before the point and %d after it", maxDecimalDigits, maxDecimalFraction)}
	}
	if whole == "" {
		whole = "0"
	}
	if frac == "" {
		return whole, nil
	}
	return whole + "." + frac, nil
}

// CompareDecimals compares two canonical decimals.
func CompareDecimals(a, b string) int {
	aw, af, _ := strings.Cut(a, ".")
	bw, bf, _ := strings.Cut(b, ".")
	if len(aw) != len(bw) {
		if len(aw) < len(bw) {
			return -1
		}
		return 1
	}
	if c := strings.Compare(aw, bw); c != 0 {
		return c
	}
	n := max(len(af), len(bf))
	return strings.Compare(af+strings.Repeat("0", n-len(af)), bf+strings.Repeat("0", n-len(bf)))
}
