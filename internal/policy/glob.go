package policy

import "errors"

// Match reports whether name matches the glob pattern: '*' matches any
// run of characters, '?' any one character, anything else itself.
func Match(pattern, name string) bool {
	// Iterative matcher with single-star backtracking: linear in practice,
	// O(len(pattern)*len(name)) at worst, never exponential.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// validGlob rejects patterns that cannot be meant.
func validGlob(pattern string) error {
	if pattern == "" {
		return errors.New("empty pattern")
	}
	for i := 0; i < len(pattern); i++ {
		if c := pattern[i]; c <= ' ' || c > '~' {
			return errors.New("pattern has a space or non-printable character")
		}
	}
	return nil
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if Match(p, name) {
			return true
		}
	}
	return false
}
