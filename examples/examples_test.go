// Package examples holds no code: its tests check the operator examples
// beside them against what reshard really exports. The Prometheus rules
// (prometheus/) pass promtool's checks and unit tests, and the Grafana
// dashboard's (grafana/) and the rules' PromQL parse with Prometheus' own
// parser and name only families, labels and recording rules that exist.
package examples

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/reshard/reshard/metrics"
	"github.com/reshard/reshard/sync/progress"
	"github.com/reshard/reshard/sync/task"
)

// scrapeLabels are the labels Prometheus adds to every scraped series.
var scrapeLabels = []string{"job", "instance"}

// exported returns every family a reshard process serves on /metrics and
// its label names: reshard's own (metrics.Families) and the Go and process
// collectors' (gathered from the same registry reshard serves).
func exported(t *testing.T) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	add := func(name string, labels []string) {
		set := map[string]bool{"__name__": true}
		for _, l := range append(labels, scrapeLabels...) {
			set[l] = true
		}
		out[name] = set
	}
	for _, f := range metrics.Families() {
		add(f.Name, f.Labels)
	}
	fams, err := metrics.NewRegistry(progress.NewRegistry(), task.NewManager()).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "reshard_") {
			continue
		}
		var labels []string
		for _, m := range f.Metric {
			for _, l := range m.Label {
				labels = append(labels, l.GetName())
			}
		}
		add(f.GetName(), labels)
	}
	if len(out) < len(metrics.Families())+10 {
		t.Fatalf("only %d families: the Go and process collectors are missing", len(out))
	}
	return out
}

// grafanaVars are Grafana's template variables in a query: $name,
// ${name}, ${name:format}, [[name]].
var grafanaVars = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// expandGrafana replaces Grafana's variables the way Grafana does before it
// sends a query: intervals become durations, others values.
func expandGrafana(q string) string {
	return grafanaVars.ReplaceAllStringFunc(q, func(v string) string {
		name := strings.Trim(v, "${}[]")
		name, _, _ = strings.Cut(name, ":")
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		case "__interval_ms", "__range_s", "__range_ms":
			return "300"
		}
		return "value"
	})
}

// checkQuery parses q with Prometheus' parser and checks that every
// selector names a known series and only labels it has, that every
// aggregation groups by labels its input has, and that legend's {{label}}
// references exist. It returns the names the query selects.
func checkQuery(t *testing.T, where, q, legend string, known map[string]map[string]bool) []string {
	t.Helper()
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(q)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, q, err)
		return nil
	}
	var names []string
	// labels available under a node: the union of its selectors' labels.
	available := func(n parser.Node) map[string]bool {
		set := map[string]bool{}
		parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				for l := range known[selectorName(vs)] {
					set[l] = true
				}
			}
			return nil
		})
		return set
	}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name := selectorName(n)
			labels, ok := known[name]
			if !ok {
				t.Errorf("%s: %q selects %q, which reshard does not export", where, q, name)
				return nil
			}
			names = append(names, name)
			for _, m := range n.LabelMatchers {
				if !labels[m.Name] {
					t.Errorf("%s: %q matches label %q, which %s does not have (%s)", where, q, m.Name, name, keys(labels))
				}
			}
		case *parser.AggregateExpr:
			have := available(n.Expr)
			for _, g := range n.Grouping {
				if !have[g] {
					t.Errorf("%s: %q groups by %q, which its input does not have (%s)", where, q, g, keys(have))
				}
			}
		}
		return nil
	})
	have := available(expr)
	for _, m := range regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`).FindAllStringSubmatch(legend, -1) {
		if !have[m[1]] {
			t.Errorf("%s: legend %q uses {{%s}}, which %q does not have", where, legend, m[1], q)
		}
	}
	return names
}

// selectorName is the metric name a selector selects ("" if none is fixed).
func selectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == "__name__" && m.Type.String() == "=" {
			return m.Value
		}
	}
	return ""
}

func keys(m map[string]bool) string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
		RefID        string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// labelValues matches Grafana's label_values(selector, label) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)

// TestGrafanaDashboard: every panel of grafana/reshard.json queries the
// Prometheus data source variable with PromQL that parses and names what
// reshard exports, and every reshard_ family is charted somewhere.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana/reshard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana/reshard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Fatalf("dashboard without title or uid")
	}
	known := exported(t)
	charted := map[string]bool{}
	variables := map[string]bool{}
	for _, v := range d.Templating.List {
		variables[v.Name] = true
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		for _, name := range checkQuery(t, "variable "+v.Name, expandGrafana(m[1]), "", known) {
			if !known[name][m[2]] {
				t.Errorf("variable %s: %s has no label %q", v.Name, name, m[2])
			}
		}
	}
	if !variables["datasource"] {
		t.Fatal("no datasource variable: the dashboard would be bound to one Prometheus")
	}
	var panels []panel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...)
	}
	queries := 0
	for _, p := range panels {
		if p.Type == "row" {
			continue
		}
		where := fmt.Sprintf("panel %q", p.Title)
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: data source %+v, want the prometheus ${datasource} variable", where, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", where)
		}
		for _, tg := range p.Targets {
			queries++
			for _, v := range grafanaVars.FindAllStringSubmatch(tg.Expr, -1) {
				name := v[1] + v[2] + v[3]
				if !strings.HasPrefix(name, "__") && !variables[name] {
					t.Errorf("%s: %q uses $%s, which the dashboard does not define", where, tg.Expr, name)
				}
			}
			for _, name := range checkQuery(t, where+" "+tg.RefID, expandGrafana(tg.Expr), tg.LegendFormat, known) {
				charted[name] = true
			}
		}
	}
	for _, f := range metrics.Families() {
		if !charted[f.Name] {
			t.Errorf("%s is not on the dashboard", f.Name)
		}
	}
	t.Logf("%d panels, %d queries, %d reshard families charted", len(panels), queries, len(charted))
}

// ruleFile is the part of a Prometheus rule file the test reads.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// promtool runs Debian's promtool (scripts/deps.sh installs it) in
// prometheus/ and returns its output.
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed: scripts/deps.sh installs the prometheus package")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = "prometheus"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPrometheusRules: promtool accepts the rules and the example
// configuration, the rules' unit tests pass, and every rule's PromQL names
// what reshard exports (or a rule recorded before it).
func TestPrometheusRules(t *testing.T) {
	promtool(t, "check", "rules", "reshard-rules.yml")
	promtool(t, "check", "config", "prometheus.yml")
	out := promtool(t, "test", "rules", "reshard-rules.test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
	data, err := os.ReadFile("prometheus/reshard-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatal(err)
	}
	known := exported(t)
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Record + r.Alert
			checkQuery(t, "rule "+name, r.Expr, "", known)
			if r.Record != "" {
				// A recorded series keeps the labels its expression leaves;
				// later rules may use any of its input's.
				known[r.Record] = known[firstSelector(t, r.Expr)]
				continue
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: needs a summary and a description", r.Alert)
			}
		}
	}
	// What issue 20 asks the rules to watch.
	for _, a := range []string{"ReshardSlotRetainingWAL", "ReshardInactiveSlot", "ReshardReplicationLagNotFalling", "ReshardTaskFailed",
		"ReshardTaskStopped", "ReshardCopyStalled", "ReshardVerifyMismatch"} {
		if !alerts[a] {
			t.Errorf("no alert %s", a)
		}
	}
	tests, err := os.ReadFile("prometheus/reshard-rules.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	for a := range alerts {
		if !strings.Contains(string(tests), "alertname: "+a+"\n") {
			t.Errorf("alert %s has no case in reshard-rules.test.yml", a)
		}
	}
}

// firstSelector is the name of the first series an expression selects.
func firstSelector(t *testing.T, q string) string {
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(q)
	if err != nil {
		return ""
	}
	name := ""
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && name == "" {
			name = selectorName(vs)
		}
		return nil
	})
	return name
}
