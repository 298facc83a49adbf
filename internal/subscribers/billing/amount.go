package billing

import (
	"math/big"
	"strings"
)

// Decimals is how many decimal places gb_hours and cost are rounded to.
const Decimals = 18

// powersOfTen are 10^0 … 10^40, the scales FormatDecimal rounds at.
var powersOfTen = func() []*big.Rat {
	out := make([]*big.Rat, 41)
	p := big.NewInt(1)
	for i := range out {
		out[i] = new(big.Rat).SetInt(p)
		p = new(big.Int).Mul(p, big.NewInt(10))
	}
	return out
}()

func powerOfTen(n int) *big.Rat {
	if n < len(powersOfTen) {
		return powersOfTen[n]
	}
	return new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil))
}

// bytesPerGBHour is 10^9 bytes × 3600 s: byte-seconds per GB-hour.
var bytesPerGBHour = big.NewRat(3_600_000_000_000, 1)

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
	q, neg := roundScaled(r, decimals)
	return writeScaled(q, neg, decimals)
}

// formatRounded is FormatDecimal, and the rounded value it wrote.
func formatRounded(r *big.Rat, decimals int) (string, *big.Rat) {
	q, neg := roundScaled(r, decimals)
	if q.Sign() == 0 {
		return "0", new(big.Rat)
	}
	s := writeScaled(q, neg, decimals)
	rounded := new(big.Rat).SetFrac(q, powerOfTen(decimals).Num())
	if neg {
		rounded.Neg(rounded)
	}
	return s, rounded
}

// roundScaled is |r| × 10^decimals rounded half-to-even to an integer, and
// whether r is negative.
func roundScaled(r *big.Rat, decimals int) (q *big.Int, neg bool) {
	// num/den is r scaled, left unreduced: reducing it (big.Rat.Mul does)
	// costs a GCD, and a statement writes a dozen amounts.
	num := new(big.Int).Mul(r.Num(), powerOfTen(decimals).Num())
	neg = num.Sign() < 0
	num.Abs(num)
	den := r.Denom()
	q, rem := num.QuoRem(num, den, new(big.Int))
	switch rem.Lsh(rem, 1).Cmp(den) {
	case 1:
		q.Add(q, big.NewInt(1))
	case 0:
		if q.Bit(0) == 1 {
			q.Add(q, big.NewInt(1))
		}
	}
	return q, neg
}

// writeScaled writes q / 10^decimals (q not negative; negated when neg) in
// FormatDecimal's form.
func writeScaled(q *big.Int, neg bool, decimals int) string {
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

// FormatAmount writes an amount as DESIGN.md's billing section has it: a
// decimal that ends is written exactly (gb_hours of a byte-second count
// has at most 19 decimals, an amount at most 37); one that does not is
// rounded half-to-even to Decimals places.
func FormatAmount(r *big.Rat) string {
	if places, ok := decimalPlaces(r); ok {
		return FormatDecimal(r, places)
	}
	return FormatDecimal(r, Decimals)
}

// writeAmount is FormatAmount, and the value it wrote.
func writeAmount(r *big.Rat) (string, *big.Rat) {
	if places, ok := decimalPlaces(r); ok {
		return FormatDecimal(r, places), r
	}
	return formatRounded(r, Decimals)
}

// decimalPlaces is how many decimals r needs when its decimal ends (its
// denominator has no prime factor but 2 and 5).
func decimalPlaces(r *big.Rat) (int, bool) {
	den := r.Denom()
	twos := int(den.TrailingZeroBits())
	if den.BitLen()-twos <= 64 {
		// The usual denominator fits a machine word once its twos are out.
		d := new(big.Int).Rsh(den, uint(twos)).Uint64()
		fives := 0
		for d%5 == 0 {
			d /= 5
			fives++
		}
		if d != 1 {
			return 0, false
		}
		return max(twos, fives), true
	}
	d := new(big.Int).Rsh(den, uint(twos))
	fives := 0
	five, q, m := big.NewInt(5), new(big.Int), new(big.Int)
	for {
		q.QuoRem(d, five, m)
		if m.Sign() != 0 {
			break
		}
		d.Set(q)
		fives++
	}
	if d.Cmp(big.NewInt(1)) != 0 {
		return 0, false
	}
	return max(twos, fives), true
}

// FormatFixed rounds r half-to-even to decimals places and writes it with
// exactly that many ("12.30", "0.00", "1235" for none): money as it is
// written.
func FormatFixed(r *big.Rat, decimals int) string {
	s := FormatDecimal(r, decimals)
	if decimals == 0 {
		return s
	}
	whole, frac, _ := strings.Cut(s, ".")
	return whole + "." + frac + strings.Repeat("0", decimals-len(frac))
}
