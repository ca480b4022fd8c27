package main

import (
	"flag"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// newFlagSet makes a FlagSet that reports errors instead of exiting.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: moerl %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; a parse error becomes a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	return nil
}

// structFlag is a struct field that gets a command-line flag.
type structFlag struct {
	name  string // flag name: prefix + json name with '_' as '-'
	tag   string // json name
	field reflect.Value
}

// structFlags lists the fields of the struct ptr points to that take a
// flag: exported, with a json name not in skip, of a kind a flag can parse
// (int, uint64, float64, bool, string). bindStruct and copySetFields agree
// through it on which fields have flags.
func structFlags(ptr any, prefix string, skip []string) []structFlag {
	v := reflect.ValueOf(ptr).Elem()
	t := v.Type()
	var out []structFlag
	for i := range t.NumField() {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("json"), ",")[0]
		if tag == "" || tag == "-" || !f.IsExported() || slices.Contains(skip, tag) {
			continue
		}
		switch v.Field(i).Kind() {
		case reflect.Int, reflect.Uint64, reflect.Float64, reflect.Bool, reflect.String:
			out = append(out, structFlag{prefix + strings.ReplaceAll(tag, "_", "-"), tag, v.Field(i)})
		}
	}
	return out
}

// bindStruct registers one flag per field that structFlags lists, named
// after its json tag with '_' as '-' and an optional prefix, so that every
// config field can be set from the command line. Fields whose json names
// are in skip get no flag.
func bindStruct(fs *flag.FlagSet, ptr any, prefix, what string, skip ...string) {
	for _, f := range structFlags(ptr, prefix, skip) {
		usage := what + " " + f.tag
		switch f.field.Kind() {
		case reflect.Int:
			fs.Var(intValue{f.field}, f.name, usage)
		case reflect.Uint64:
			fs.Var(uintValue{f.field}, f.name, usage)
		case reflect.Float64:
			fs.Var(floatValue{f.field}, f.name, usage)
		case reflect.Bool:
			fs.Var(boolValue{f.field}, f.name, usage)
		case reflect.String:
			fs.Var(stringValue{f.field}, f.name, usage)
		}
	}
}

type intValue struct{ v reflect.Value }

func (x intValue) String() string {
	if !x.v.IsValid() {
		return "0"
	}
	return strconv.FormatInt(x.v.Int(), 10)
}
func (x intValue) Set(s string) error {
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		return fmt.Errorf("want an integer")
	}
	x.v.SetInt(n)
	return nil
}

type uintValue struct{ v reflect.Value }

func (x uintValue) String() string {
	if !x.v.IsValid() {
		return "0"
	}
	return strconv.FormatUint(x.v.Uint(), 10)
}
func (x uintValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return fmt.Errorf("want a non-negative integer")
	}
	x.v.SetUint(n)
	return nil
}

type floatValue struct{ v reflect.Value }

func (x floatValue) String() string {
	if !x.v.IsValid() {
		return "0"
	}
	return strconv.FormatFloat(x.v.Float(), 'g', -1, 64)
}
func (x floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("want a number")
	}
	x.v.SetFloat(f)
	return nil
}

type boolValue struct{ v reflect.Value }

func (x boolValue) IsBoolFlag() bool { return true }
func (x boolValue) String() string {
	if !x.v.IsValid() {
		return "false"
	}
	return strconv.FormatBool(x.v.Bool())
}
func (x boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	x.v.SetBool(b)
	return nil
}

type stringValue struct{ v reflect.Value }

func (x stringValue) String() string {
	if !x.v.IsValid() {
		return ""
	}
	return x.v.String()
}
func (x stringValue) Set(s string) error { x.v.SetString(s); return nil }

// setFlags reports which flags were given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// copySetFields copies into dst each field of src (same struct type) whose
// flag, made by bindStruct with prefix, was set on the command line: flags
// override a preset without resetting the fields they do not name. A flag
// of another origin that happens to share a field's name (--algo, say) does
// not count: only fields bindStruct binds are copied.
func copySetFields(fs *flag.FlagSet, dst, src any, prefix string, skip ...string) {
	set := setFlags(fs)
	from := structFlags(src, prefix, skip)
	to := structFlags(dst, prefix, skip)
	for i, f := range from {
		if set[f.name] {
			to[i].field.Set(f.field)
		}
	}
}
