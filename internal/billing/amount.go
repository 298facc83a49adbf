package billing

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// Decimals is how many decimal places gb_hours and cost are rounded to.
const Decimals = 18

// bytesPerGBHour is 10^9 bytes × 3600 s: byte-seconds per GB-hour.
var bytesPerGBHour = big.NewRat(3_600_000_000_000, 1)

// Price is a validated price per GB-hour and its currency, from
// configuration.
type Price struct {
	perGBHour *big.Rat
	currency  string
}

// ParsePrice validates the configured price (a non-negative decimal such as
// "0.00003") and currency (such as "USD").
func ParsePrice(perGBHour, currency string) (Price, error) {
	r, ok := parseDecimal(perGBHour)
	if !ok || r.Sign() < 0 {
		return Price{}, fmt.Errorf("billing: price per GB-hour %q is not a non-negative decimal", perGBHour)
	}
	if strings.TrimSpace(currency) == "" {
		return Price{}, errors.New("billing: currency is empty")
	}
	return Price{perGBHour: r, currency: currency}, nil
}

// amounts derives gb_hours and cost from the exact byte-seconds.
func (p Price) amounts(byteSeconds string) (gbHours, cost string, err error) {
	if p.perGBHour == nil {
		return "", "", errors.New("billing: price not set (use ParsePrice)")
	}
	bs, ok := parseDecimal(byteSeconds)
	if !ok {
		return "", "", fmt.Errorf("billing: byte_seconds %q from the database is not a decimal", byteSeconds)
	}
	h := new(big.Rat).Quo(bs, bytesPerGBHour)
	c := new(big.Rat).Mul(h, p.perGBHour)
	return FormatDecimal(h, Decimals), FormatDecimal(c, Decimals), nil
}

// parseDecimal accepts plain decimals only ("12", "0.5", "-3.25"): no
// fractions or exponents, which big.Rat.SetString would also take.
func parseDecimal(s string) (*big.Rat, bool) {
	t := strings.TrimPrefix(s, "-")
	intPart, frac, _ := strings.Cut(t, ".")
	if intPart == "" && frac == "" {
		return nil, false
	}
	for _, ch := range intPart + frac {
		if ch < '0' || ch > '9' {
			return nil, false
		}
	}
	return new(big.Rat).SetString(s)
}

// FormatDecimal rounds r half-to-even to at most decimals places and writes
// it in its shortest form: no exponent, no trailing zeros, no point when
// whole, and "0" (never "-0") for zero.
func FormatDecimal(r *big.Rat, decimals int) string {
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil)
	scaled := new(big.Rat).Mul(r, new(big.Rat).SetInt(scale))
	neg := scaled.Sign() < 0
	num := new(big.Int).Abs(scaled.Num())
	den := scaled.Denom()
	q, rem := new(big.Int).QuoRem(num, den, new(big.Int))
	switch new(big.Int).Lsh(rem, 1).Cmp(den) {
	case 1:
		q.Add(q, big.NewInt(1))
	case 0:
		if q.Bit(0) == 1 {
			q.Add(q, big.NewInt(1))
		}
	}
	if q.Sign() == 0 {
		return "0"
	}
	digits := q.String()
	if len(digits) <= decimals {
		digits = strings.Repeat("0", decimals-len(digits)+1) + digits
	}
	whole, frac := digits[:len(digits)-decimals], strings.TrimRight(digits[len(digits)-decimals:], "0")
	out := whole
	if frac != "" {
		out += "." + frac
	}
	if neg {
		out = "-" + out
	}
	return out
}
