package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"iter"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/broker/limits"
)

// The config file's shape, decoded strictly (yaml.v3 KnownFields), then
// validated in one pass; the yaml.Node tree is built only when an error or
// a warning needs a line. Tags want and eg: a type error's expectation.

type fileDoc struct {
	Listen                listenDoc      `yaml:"listen"`
	UnixSocket            *unixSocketDoc `yaml:"unix_socket"`
	Tenants               []*tenantDoc   `yaml:"tenants" want:"a list of tenants"` // nil: a null entry
	TenantsDir            string         `yaml:"tenants_dir"`
	StrictFilePermissions bool           `yaml:"strict_file_permissions"`
	TLS                   *TLS           `yaml:"tls"`
	Callers               []*Caller      `yaml:"callers" want:"a list of callers"`
	Audit                 *auditDoc      `yaml:"audit"`
	Limits                limitsDoc      `yaml:"limits"`
	InsecurePlaintext     bool           `yaml:"insecure_plaintext"`
	Watch                 watchDoc       `yaml:"watch"`
	Admin                 Admin          `yaml:"admin"`
	OAuth                 OAuth          `yaml:"oauth"`
	Shutdown              Shutdown       `yaml:"shutdown"`
}

// tenantDoc is an entry of tenants, or a file in tenants_dir. The "3" in
// the lists' want is MaxRotationFiles.
type tenantDoc struct {
	Name              string   `yaml:"name"`
	AuthServer        string   `yaml:"auth_server"`
	TokenURL          string   `yaml:"token_url"`
	CredentialsFile   string   `yaml:"credentials_file"`
	CredentialsFiles  []string `yaml:"credentials_files" want:"a list of 1 to 3 files, newest first" eg:"[new.json, old.json]"`
	ClientID          string   `yaml:"client_id"`
	ClientSecretFile  string   `yaml:"client_secret_file"`
	ClientSecretFiles []string `yaml:"client_secret_files" want:"a list of 1 to 3 files, newest first" eg:"[new.secret, old.secret]"`
	// private_key_jwt: client_id with one of these, auth_style private_key_jwt.
	ClientAssertionKeyFile  string   `yaml:"client_assertion_key_file"`
	ClientAssertionKeyFiles []string `yaml:"client_assertion_key_files" want:"a list of 1 to 3 files, newest first" eg:"[new.pem, old.pem]"`
	KeyID                   string   `yaml:"key_id"`
	AssertionAudience       string   `yaml:"assertion_audience"`
	Scopes                  []string `yaml:"scopes" want:"a list of scopes" eg:"[read:inputs, write:inputs]"`
	AuthStyle               string   `yaml:"auth_style"`
	AllowInsecureHTTP       bool     `yaml:"allow_insecure_http"`
	CAFile                  string   `yaml:"ca_file"`
}

type auditDoc struct {
	Path  string `yaml:"path"`
	Fsync string `yaml:"fsync"`
}

type watchDoc struct {
	Enabled  bool          `yaml:"enabled"`
	Interval time.Duration `yaml:"interval" eg:"30s or 5m"`
}

// limitsDoc is the limits section, decoded into limits.Limits, which
// declares the keys and bounds; keys are those written, which Validate
// checks even when 0.
type limitsDoc struct {
	limits.Limits
	keys []string
}

// UnmarshalYAML decodes into limits.Limits and records the keys. An
// unknown key is reported as yaml.v3's KnownFields would, and so is a
// fraction for a whole number (which yaml.v3 would truncate).
func (l *limitsDoc) UnmarshalYAML(n *yaml.Node) error {
	var errs []string
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		l.keys = append(l.keys, k.Value)
		switch l.Ptr(k.Value).(type) {
		case nil:
			errs = append(errs, fmt.Sprintf("line %d: field %s not found in type limits.Limits", k.Line, k.Value))
		case *int:
			if v.ShortTag() == "!!float" {
				errs = append(errs, fmt.Sprintf("line %d: cannot unmarshal !!float `%s` into int", v.Line, v.Value))
			}
		}
	}
	err := n.Decode(&l.Limits)
	if te, ok := errors.AsType[*yaml.TypeError](err); ok {
		errs = append(errs, te.Errors...)
	} else if err != nil {
		return err
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// decode decodes the single YAML document in p.data into v strictly;
// emptyFix is the fix for an empty file. A document that is only null is
// left to the caller (v stays as it was).
func (p *parser) decode(v any, emptyFix string) error {
	dec := yaml.NewDecoder(bytes.NewReader(p.data))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return p.empty(emptyFix)
	}
	te, ok := errors.AsType[*yaml.TypeError](err)
	if err != nil && !ok {
		return p.syntaxErr(err)
	}
	var extra yaml.Node
	switch xerr := dec.Decode(&extra); {
	case xerr == nil:
		return &Error{File: p.name, Line: extra.Line, Err: errors.New(`more than one YAML document; keep a single document (remove the "---" separator)`)}
	case !errors.Is(xerr, io.EOF):
		return p.syntaxErr(xerr)
	case ok:
		return p.typeErr(te.Errors[0], reflect.TypeOf(v).Elem())
	}
	return nil
}

// empty is the error for a file without content.
func (p *parser) empty(fix string) error {
	return &Error{File: p.name, Err: fmt.Errorf("file is empty; %s", fix)}
}

var (
	yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	unknownRE  = regexp.MustCompile(`^line (\d+): field (.*) not found in type \S+$`)
	dupRE      = regexp.MustCompile(`^line (\d+): mapping key "(.*)" already defined at line (\d+)$`)
	typeRE     = regexp.MustCompile("(?s)^line (\\d+): cannot unmarshal (!\\S*)(?: `.*`)? into (\\S+)$")
	lineRE     = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
	quotedRE   = regexp.MustCompile("(?s) `.*` ")
)

func (p *parser) syntaxErr(err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: p.name, Line: line, Err: fmt.Errorf("invalid YAML: %s", m[2])}
	}
	return &Error{File: p.name, Err: fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))}
}

// typeErr turns yaml.v3's first decoding error, msg, into an *Error naming
// the field and the fix; root is the type decoded into.
func (p *parser) typeErr(msg string, root reflect.Type) error {
	for _, l := range located {
		m := l.re.FindStringSubmatch(msg)
		if m == nil {
			continue
		}
		for s := range spots(p.tree(), root) {
			if l.at(s, m) {
				line, field, err := l.err(s, m)
				return &Error{File: p.name, Line: line, Field: field, Err: err}
			}
		}
	}
	// Not located: yaml.v3's words, without the value it quotes.
	e := &Error{File: p.name, Err: fmt.Errorf("invalid value: %s", quotedRE.ReplaceAllString(msg, " "))}
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Err = fmt.Errorf("invalid value: %s", quotedRE.ReplaceAllString(m[2], " "))
	}
	return e
}

// located are the yaml.v3 errors typeErr places in the tree: the pattern
// of the message, the spot it is about, and the error for that spot.
var located = []struct {
	re  *regexp.Regexp
	at  func(s spot, m []string) bool
	err func(s spot, m []string) (line int, field string, err error)
}{
	{unknownRE, func(s spot, m []string) bool { return keyAt(s, m) && s.t == nil },
		func(s spot, m []string) (int, string, error) { return s.key.Line, s.up(), unknownKey(m[2], s.parent) }},
	{dupRE, keyAt,
		func(s spot, m []string) (int, string, error) {
			return s.key.Line, s.path, fmt.Errorf("duplicate key (first on line %s); remove one", m[3])
		}},
	{typeRE, func(s spot, m []string) bool {
		return s.t != nil && strconv.Itoa(s.val.Line) == m[1] && s.val.ShortTag() == m[2] && deref(s.t).String() == m[3]
	}, func(s spot, _ []string) (int, string, error) { return s.val.Line, s.path, wrongType(s) }},
	{typeRE, func(s spot, m []string) bool {
		return s.key != nil && strconv.Itoa(s.key.Line) == m[1] && s.key.ShortTag() == m[2]
	}, func(s spot, _ []string) (int, string, error) {
		return s.key.Line, s.up(), fmt.Errorf("keys must be plain strings; allowed keys: %s", strings.Join(keysOf(s.parent), ", "))
	}},
}

// keyAt reports whether s's key is the one on line m[1] named m[2].
func keyAt(s spot, m []string) bool {
	return s.key != nil && strconv.Itoa(s.key.Line) == m[1] && s.key.Value == m[2]
}

func unknownKey(key string, in reflect.Type) error {
	if key == "client_secret" {
		return fmt.Errorf("unknown key %q; secrets do not belong in the config file: write the secret to a file and set client_secret_file", key)
	}
	return fmt.Errorf("unknown key %q; allowed keys: %s", key, strings.Join(keysOf(in), ", "))
}

// wrongType says what the field at s must be and what it got.
func wrongType(s spot) error {
	n, t, eg := s.val, deref(s.t), s.tag.Get("eg")
	if t == reflect.TypeFor[time.Duration]() {
		eg = cmp.Or(eg, "10s or 500ms")
		if n.Kind == yaml.ScalarNode {
			return fmt.Errorf("%q is not a duration; write e.g. %s", n.Value, eg)
		}
		return fmt.Errorf("must be a duration, got %s; write e.g. %s", kindName(n), eg)
	}
	want, got := "a string", kindName(n)
	switch t.Kind() {
	case reflect.Struct:
		want = "a mapping with keys " + strings.Join(keysOf(t), ", ")
	case reflect.Slice:
		want = cmp.Or(s.tag.Get("want"), "a list")
	case reflect.Bool:
		want, got = "true or false", describe(n)
	case reflect.Float64:
		want, got = "a number", describe(n)
	case reflect.Int:
		want, got = "a whole number", describe(n)
	case reflect.Uint32:
		want, got = cmp.Or(s.tag.Get("want"), "a whole number"), describe(n)
	}
	if eg != "" {
		return fmt.Errorf("must be %s, got %s; write e.g. %s", want, got, eg)
	}
	return fmt.Errorf("must be %s, got %s", want, got)
}

// spot is a value in the YAML tree with the Go type it decodes into (nil
// for an unknown key) and, for a struct field, the struct and the tag.
type spot struct {
	path     string
	key, val *yaml.Node
	t        reflect.Type
	parent   reflect.Type
	tag      reflect.StructTag
}

// up is the path of the mapping holding s.
func (s spot) up() string { return strings.TrimSuffix(strings.TrimSuffix(s.path, s.key.Value), ".") }

// spots yields every value under root in document order, with its type.
func spots(root *yaml.Node, t reflect.Type) iter.Seq[spot] {
	return func(yield func(spot) bool) { walk(spot{val: root, t: t}, yield) }
}

func walk(s spot, yield func(spot) bool) bool {
	if !yield(s) {
		return false
	}
	n, t := s.val, deref(s.t)
	switch {
	case t == nil:
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		for i := 0; i+1 < len(n.Content); i += 2 {
			c := spot{path: join(s.path, n.Content[i].Value), key: n.Content[i], val: resolve(n.Content[i+1]), parent: t}
			if f, ok := fieldOf(t, c.key.Value); ok {
				c.t, c.tag = f.Type, f.Tag
			}
			if !walk(c, yield) {
				return false
			}
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, e := range n.Content {
			if !walk(spot{path: fmt.Sprintf("%s[%d]", s.path, i), val: resolve(e), t: t.Elem()}, yield) {
				return false
			}
		}
	}
	return true
}

// deref is the type a value of t is decoded as.
func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[limitsDoc]() {
		return reflect.TypeFor[limits.Limits]()
	}
	return t
}

func fieldOf(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); yamlKey(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func keysOf(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if k := yamlKey(t.Field(i)); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

func yamlKey(f reflect.StructField) string {
	k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if k == "-" {
		return ""
	}
	return k
}

// tree returns the root of p.data's first YAML document, parsed on first
// use: only errors, warnings and a few presence checks need it.
func (p *parser) tree() *yaml.Node {
	if p.root == nil {
		var doc yaml.Node
		p.root = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
		if yaml.Unmarshal(p.data, &doc) == nil && len(doc.Content) > 0 {
			p.root = resolve(doc.Content[0])
		}
	}
	return p.root
}

// at returns the key and value nodes of the field at path, such as
// "tenants[1].name" ("" is the root); nil if it is absent.
func (p *parser) at(path string) (key, val *yaml.Node) {
	val = p.tree()
	for _, part := range strings.FieldsFunc(path, func(r rune) bool { return r == '.' || r == '[' }) {
		if i, ok := strings.CutSuffix(part, "]"); ok {
			n, err := strconv.Atoi(i)
			if err != nil || val.Kind != yaml.SequenceNode || n < 0 || n >= len(val.Content) {
				return nil, nil
			}
			key, val = nil, resolve(val.Content[n])
		} else if key, val = child(val, part); val == nil {
			return nil, nil
		}
	}
	return key, val
}

func child(n *yaml.Node, name string) (key, val *yaml.Node) {
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i], resolve(n.Content[i+1])
		}
	}
	return nil, nil
}

// has reports whether the file sets the field at path, even to null.
func (p *parser) has(path string) bool {
	_, v := p.at(path)
	return v != nil
}

// resolve follows YAML aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// kindName names the kind of n, "a mapping" or "a number".
func kindName(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind != yaml.ScalarNode:
		return "an unsupported YAML node"
	}
	return cmp.Or(map[string]string{"!!null": "nothing", "!!int": "a number", "!!float": "a number", "!!bool": "a boolean"}[n.ShortTag()], "a string")
}

// describe is kindName with the value of a scalar, for the fields that
// expect a boolean or a number.
func describe(n *yaml.Node) string {
	switch tag := n.ShortTag(); {
	case n.Kind != yaml.ScalarNode || tag == "!!null":
		return kindName(n)
	case tag == "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	}
	return n.Value
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}
