package sharding

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
)

// DecodeInt decodes an integer key of any width. In binary form data is a
// big-endian int2, int4 or int8, told apart by its length, so a key declared
// bigint may come from a smallint or integer column. In text form data is a
// decimal integer as PostgreSQL's output functions write it (an optional
// sign, digits), optionally surrounded by white space as the input functions
// allow. It never allocates, except for the error.
func DecodeInt(f Format, data []byte) (int64, error) {
	if f == FormatBinary {
		switch len(data) {
		case 8:
			return int64(binary.BigEndian.Uint64(data)), nil
		case 4:
			return int64(int32(binary.BigEndian.Uint32(data))), nil
		case 2:
			return int64(int16(binary.BigEndian.Uint16(data))), nil
		}
		return 0, fmt.Errorf("sharding: binary integer of %d bytes (want 2, 4 or 8)", len(data))
	}
	v, ok := parseInt(data)
	if !ok {
		return 0, fmt.Errorf("sharding: invalid integer %s", quoteKey(data))
	}
	return v, nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// parseInt parses [space][sign]digits[space] into an int64.
func parseInt(s []byte) (int64, bool) {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	neg := false
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if len(s) == 0 {
		return 0, false
	}
	// Accumulate the magnitude as a uint64; math.MinInt64's magnitude is
	// one more than math.MaxInt64's.
	limit := uint64(math.MaxInt64)
	if neg {
		limit++
	}
	var u uint64
	for _, c := range s {
		d := c - '0'
		if d > 9 {
			return 0, false
		}
		if u > (limit-uint64(d))/10 {
			return 0, false
		}
		u = u*10 + uint64(d)
	}
	if neg {
		return int64(-u), true // wraps to MinInt64 for its magnitude
	}
	return int64(u), true
}

// DecodeUUID decodes a uuid key: 16 bytes in binary form; in text form any
// spelling PostgreSQL's uuid_in accepts: 32 hex digits in either case, with
// a hyphen allowed after any group of four, optionally in braces (the
// canonical 8-4-4-4-12 form among them). It never allocates, except for the
// error.
func DecodeUUID(f Format, data []byte) ([16]byte, error) {
	var u [16]byte
	if f == FormatBinary {
		if len(data) != 16 {
			return u, fmt.Errorf("sharding: binary uuid of %d bytes (want 16)", len(data))
		}
		copy(u[:], data)
		return u, nil
	}
	if !parseUUID(&u, data) {
		return u, fmt.Errorf("sharding: invalid uuid %s", quoteKey(data))
	}
	return u, nil
}

// parseUUID mirrors string_to_uuid in src/backend/utils/adt/uuid.c.
func parseUUID(u *[16]byte, s []byte) bool {
	braces := len(s) > 0 && s[0] == '{'
	if braces {
		s = s[1:]
	}
	for i := 0; i < 16; i++ {
		if len(s) < 2 {
			return false
		}
		hi, ok1 := unhex(s[0])
		lo, ok2 := unhex(s[1])
		if !ok1 || !ok2 {
			return false
		}
		u[i] = hi<<4 | lo
		s = s[2:]
		if len(s) > 0 && s[0] == '-' && i%2 == 1 && i < 15 {
			s = s[1:]
		}
	}
	if braces {
		if len(s) == 0 || s[0] != '}' {
			return false
		}
		s = s[1:]
	}
	return len(s) == 0
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Hash returns the row hash of a non-NULL key of type t given in format f:
// the value whose remainder modulo n is the key's shard among n under
// PostgreSQL's hash partitioning (see ShardOfHash). The row hash of a NULL
// key is HashNull.
func Hash(t DataType, f Format, data []byte) (uint64, error) {
	switch {
	case t.IsInteger():
		v, err := DecodeInt(f, data)
		if err != nil {
			return 0, err
		}
		return HashInt(v), nil
	case t.isString():
		return HashText(data), nil
	case t == UUID:
		u, err := DecodeUUID(f, data)
		if err != nil {
			return 0, err
		}
		return HashUUID(u), nil
	}
	return 0, fmt.Errorf("sharding: invalid data type %v", t)
}

// maxQuotedKey bounds how much of a key error messages show.
const maxQuotedKey = 64

// quoteKey renders a key for an error message, shortened if long.
func quoteKey(b []byte) string {
	if len(b) > maxQuotedKey {
		return strconv.Quote(string(b[:maxQuotedKey])) + "..."
	}
	return strconv.Quote(string(b))
}

// formatUUID writes u in the canonical 8-4-4-4-12 form.
func formatUUID(u [16]byte) string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}
