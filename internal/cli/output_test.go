package cli

import (
	"strings"
	"testing"
)

// TestPrintResponse: every format on the shapes an API answers with: a
// list at the top or as the one value of {"data": […]}, objects with
// nested values and nulls, scalars, other shapes (pretty JSON), and bodies
// that are not JSON (as they are).
func TestPrintResponse(t *testing.T) {
	const (
		jsonCT   = "application/json; charset=utf-8"
		projects = `[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]`
	)
	for _, tc := range []struct {
		name, contentType, body, format, want string
	}{
		{"json", jsonCT, projects, "json", "[\n  {\n    \"id\": 1,\n    \"name\": \"a\"\n  },\n  {\n    \"id\": 2,\n    \"name\": \"b\"\n  }\n]\n"},
		{"jsonl", jsonCT, projects, "jsonl", "{\"id\":1,\"name\":\"a\"}\n{\"id\":2,\"name\":\"b\"}\n"},
		{"csv", jsonCT, projects, "csv", "id,name\n1,a\n2,b\n"},
		{"tsv", jsonCT, projects, "tsv", "id\tname\n1\ta\n2\tb\n"},
		{"table", jsonCT, projects, "table", "| id | name |\n|----|------|\n| 1  | a    |\n| 2  | b    |\n"},
		{"data wrapper, csv", jsonCT, `{"data": ` + projects + `}`, "csv", "id,name\n1,a\n2,b\n"},
		{"data wrapper, jsonl", jsonCT, `{"data": ` + projects + `}`, "jsonl", "{\"id\":1,\"name\":\"a\"}\n{\"id\":2,\"name\":\"b\"}\n"},
		{"data wrapper, json keeps it", jsonCT, `{"data": [1]}`, "json", "{\n  \"data\": [\n    1\n  ]\n}\n"},
		{"two keys: pretty JSON", jsonCT, `{"data": [1], "total": 1}`, "csv", "{\n  \"data\": [\n    1\n  ],\n  \"total\": 1\n}\n"},
		{"one key, not a list: pretty JSON", jsonCT, `{"data": {"id": 1}}`, "table", "{\n  \"data\": {\n    \"id\": 1\n  }\n}\n"},
		{"top-level scalar", jsonCT, `42`, "csv", "42\n"},
		{"top-level null", jsonCT, `null`, "jsonl", "null\n"},
		{"scalars get a value column", jsonCT, `[1, "two", true, 2.5]`, "csv", "value\n1\ntwo\ntrue\n2.5\n"},
		{"scalars, table", jsonCT, `["a", "bb"]`, "table", "| value |\n|-------|\n| a     |\n| bb    |\n"},
		{"scalars, jsonl", jsonCT, `[1, "two", null]`, "jsonl", "1\n\"two\"\nnull\n"},
		{"objects and scalars", jsonCT, `[{"a": 1}, 2]`, "csv", "a,value\n1,\n,2\n"},
		{"columns in order of first appearance", jsonCT, `[{"b": 1}, {"a": 2, "b": 3}]`, "csv", "b,a\n1,\n3,2\n"},
		{"nested values as compact JSON", jsonCT, `[{"id": 1, "tags": ["x", "y"], "owner": {"n": "z"}}]`, "tsv",
			"id\ttags\towner\n1\t\"[\"\"x\"\",\"\"y\"\"]\"\t\"{\"\"n\"\":\"\"z\"\"}\"\n"},
		{"nested values, table", jsonCT, `[{"id": 1, "tags": ["x", "y"]}]`, "table", "| id | tags      |\n|----|-----------|\n| 1  | [\"x\",\"y\"] |\n"},
		{"null is an empty cell", jsonCT, `[{"a": null, "b": 1}]`, "csv", "a,b\n,1\n"},
		{"null, table", jsonCT, `[{"a": null, "b": 1}]`, "table", "| a | b |\n|---|---|\n|   | 1 |\n"},
		{"csv quoting", jsonCT, `[{"s": "a, \"b\""}]`, "csv", "s\n\"a, \"\"b\"\"\"\n"},
		{"table escapes pipes and newlines", jsonCT, `[{"s": "x|y", "t": "l1\nl2"}]`, "table", "| s    | t     |\n|------|-------|\n| x\\|y | l1 l2 |\n"},
		{"table aligns by characters", jsonCT, `[{"name": "åäö"}, {"name": "a"}]`, "table", "| name |\n|------|\n| åäö  |\n| a    |\n"},
		{"a repeated key keeps its last value", jsonCT, `[{"a": 1, "a": 2}]`, "csv", "a\n2\n"},
		{"empty list", jsonCT, `[]`, "csv", ""},
		{"empty list, table", jsonCT, `{"data": []}`, "table", ""},
		{"empty list, jsonl", jsonCT, `[]`, "jsonl", ""},
		{"+json media type", "application/problem+json", `[{"a": 1}]`, "csv", "a\n1\n"},
		{"not JSON", "text/plain", "hello", "csv", "hello\n"},
		{"not JSON, newline kept", "text/html", "<p>hi</p>\n", "table", "<p>hi</p>\n"},
		{"JSON body, other type", "text/plain", projects, "csv", projects + "\n"},
		{"no content type", "", `[1]`, "jsonl", "[1]\n"},
		{"invalid JSON", jsonCT, `{"a": `, "json", "{\"a\": \n"},
		{"empty body", jsonCT, "", "json", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			if err := printResponse(&out, tc.contentType, []byte(tc.body), tc.format); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("printed\n%q\nwant\n%q", out.String(), tc.want)
			}
		})
	}
}
