package audit

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecord appends r as encoding/json would marshal it, without the
// leading {"time":"…" (the caller appends appendTime first) and without
// the newline. Written by hand because reflection-based marshalling was
// the largest cost of a cache hit (and grew every call's stack);
// TestAppendRecordMatchesJSON and FuzzAppendRecord hold it to
// encoding/json's output.
func appendRecord(b []byte, r *Record) []byte {
	b = appendField(b, "event", r.Event, false)
	b = appendField(b, "method", r.Method, true)
	b = appendField(b, "caller", r.Caller, true)
	b = appendField(b, "identity", r.Identity, true)
	b = appendField(b, "peer", r.Peer, true)
	b = appendField(b, "tenant", r.Tenant, true)
	if len(r.Scopes) > 0 {
		b = append(b, `,"scopes":[`...)
		for i, s := range r.Scopes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, s)
		}
		b = append(b, ']')
	}
	b = appendField(b, "token_fingerprint", r.TokenFingerprint, true)
	b = appendField(b, "rejected_fingerprint", r.RejectedFingerprint, true)
	if r.Version != 0 {
		b = append(b, `,"version":`...)
		b = strconv.AppendUint(b, r.Version, 10)
	}
	b = appendField(b, "result", r.Result, false)
	b = appendField(b, "code", r.Code, true)
	b = appendField(b, "reason", r.Reason, true)
	if r.Count != 0 {
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, int64(r.Count), 10)
	}
	return append(b, '}')
}

// appendTime appends the opening {"time":"…" of a line.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, `{"time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendField(b []byte, name, v string, omitEmpty bool) []byte {
	if omitEmpty && v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string the way encoding/json does
// (HTML-safe: <, > and & escaped; invalid UTF-8 as U+FFFD; U+2028 and
// U+2029 escaped).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
