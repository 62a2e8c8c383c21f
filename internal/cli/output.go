package cli

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// The output formats of `broker call`, as kog documents them: json is the
// response pretty-printed; jsonl, csv, tsv and table print the list the
// response holds, at its top or as the one value of a single-key object,
// and fall back to pretty JSON for any other shape. Columns are the keys
// of the list's objects in order of first appearance; nested values are
// printed as JSON.

// listFormats print the list a response holds.
var listFormats = map[string]func(io.Writer, []item) error{
	"jsonl": printJSONL,
	"csv":   func(w io.Writer, items []item) error { return printDelimited(w, items, ',') },
	"tsv":   func(w io.Writer, items []item) error { return printDelimited(w, items, '\t') },
	"table": printTable,
}

func validFormat(f string) bool { _, ok := listFormats[f]; return ok || f == "json" }

// printResponse prints body, of the given content type, in format.
func printResponse(w io.Writer, contentType string, body []byte, format string) error {
	if !isJSON(contentType) || !json.Valid(body) {
		if _, err := w.Write(body); err != nil {
			return err
		}
		if len(body) > 0 && body[len(body)-1] != '\n' {
			_, err := io.WriteString(w, "\n")
			return err
		}
		return nil
	}
	if printList, ok := listFormats[format]; ok {
		if items, ok := listOf(body); ok {
			return printList(w, items)
		}
	}
	var out bytes.Buffer
	if err := json.Indent(&out, bytes.TrimSpace(body), "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

func isJSON(ct string) bool {
	ct, _, _ = strings.Cut(strings.ToLower(ct), ";")
	ct = strings.TrimSpace(ct)
	return ct == "application/json" || strings.HasSuffix(ct, "+json")
}

// item is one element of a listed response: an object's keys in order
// with their raw values, or, for anything else, its raw JSON alone.
type item struct {
	keys   []string
	values map[string]json.RawMessage
	raw    json.RawMessage
}

// listOf returns the list body holds: a top-level array, or the array
// that is the only value of a top-level object.
func listOf(body []byte) ([]item, bool) {
	body = bytes.TrimSpace(body)
	var arr []json.RawMessage
	if len(body) > 0 && body[0] == '{' {
		keys, values, err := objectOf(body)
		if err != nil || len(keys) != 1 {
			return nil, false
		}
		body = bytes.TrimSpace(values[keys[0]])
	}
	if len(body) == 0 || body[0] != '[' || json.Unmarshal(body, &arr) != nil {
		return nil, false
	}
	items := make([]item, len(arr))
	for i, raw := range arr {
		items[i].raw = raw
		if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' {
			items[i].keys, items[i].values, _ = objectOf(t)
		}
	}
	return items, true
}

// objectOf decodes a JSON object keeping the order of its keys.
func objectOf(b []byte) ([]string, map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // {
		return nil, nil, err
	}
	var keys []string
	values := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		if _, dup := values[k]; !dup {
			keys = append(keys, k)
		}
		values[k] = v
	}
	return keys, values, nil
}

func printJSONL(w io.Writer, items []item) error {
	for _, it := range items {
		var line bytes.Buffer
		if err := json.Compact(&line, it.raw); err != nil {
			return err
		}
		line.WriteByte('\n')
		if _, err := w.Write(line.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// columns are the objects' keys in order of first appearance, plus
// "value" when the list holds anything but objects.
func columns(items []item) []string {
	var cols []string
	seen := map[string]bool{}
	scalar := false
	for _, it := range items {
		if it.keys == nil && it.values == nil {
			scalar = true
		}
		for _, k := range it.keys {
			if !seen[k] {
				seen[k] = true
				cols = append(cols, k)
			}
		}
	}
	if scalar && !seen["value"] {
		cols = append(cols, "value")
	}
	return cols
}

// cell renders one value: strings as they are, null as empty, numbers and
// booleans as JSON spells them, objects and arrays as compact JSON.
func cell(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	var out bytes.Buffer
	if json.Compact(&out, raw) != nil {
		return string(raw)
	}
	return out.String()
}

func rows(items []item, cols []string) [][]string {
	out := make([][]string, len(items))
	for i, it := range items {
		row := make([]string, len(cols))
		for j, c := range cols {
			if it.values == nil {
				if c == "value" {
					row[j] = cell(it.raw)
				}
				continue
			}
			row[j] = cell(it.values[c])
		}
		out[i] = row
	}
	return out
}

func printDelimited(w io.Writer, items []item, sep rune) error {
	if len(items) == 0 {
		return nil
	}
	cols := columns(items)
	cw := csv.NewWriter(w)
	cw.Comma = sep
	if err := cw.Write(cols); err != nil {
		return err
	}
	if err := cw.WriteAll(rows(items, cols)); err != nil {
		return err
	}
	return cw.Error()
}

// printTable prints a Markdown table with aligned columns.
func printTable(w io.Writer, items []item) error {
	if len(items) == 0 {
		return nil
	}
	cols := columns(items)
	body := rows(items, cols)
	esc := strings.NewReplacer("|", `\|`, "\n", " ", "\r", " ")
	widths := make([]int, len(cols))
	for j, c := range cols {
		cols[j] = esc.Replace(c)
		widths[j] = utf8.RuneCountInString(cols[j])
	}
	for _, row := range body {
		for j := range row {
			row[j] = esc.Replace(row[j])
			widths[j] = max(widths[j], utf8.RuneCountInString(row[j]))
		}
	}
	line := func(cells []string) string {
		var b strings.Builder
		b.WriteString("|")
		for j, c := range cells {
			fmt.Fprintf(&b, " %s%s |", c, strings.Repeat(" ", widths[j]-utf8.RuneCountInString(c)))
		}
		return b.String() + "\n"
	}
	var b strings.Builder
	b.WriteString(line(cols))
	b.WriteString("|")
	for _, wd := range widths {
		b.WriteString(strings.Repeat("-", wd+2) + "|")
	}
	b.WriteString("\n")
	for _, row := range body {
		b.WriteString(line(row))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
