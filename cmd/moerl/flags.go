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

// newFlagSet makes a FlagSet that reports errors instead of exiting, and
// whose help prints every flag with what it does and its default.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: moerl %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		printFlags(w, fs)
	}
	return fs
}

// printFlags lists the flags as flag.PrintDefaults does, but always with
// the default, so that "0" and "false" defaults are stated too.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		if fv, ok := f.Value.(fieldValue); ok {
			kind = fv.typeName()
		}
		def := f.DefValue
		switch {
		case def == "":
			def = "none"
		case kind == "string":
			def = strconv.Quote(def)
		}
		fmt.Fprintf(w, "  --%s %s\n    \t%s (default %s)\n", f.Name, kind, usage, def)
	})
}

// parseFlags parses args; a parse error becomes a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	return nil
}

// parseArgs parses args, positional ones allowed. --help prints the whole
// help; a mistake gets one line naming it and where the help is, not the
// flag package's full listing after it.
func parseArgs(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case err == flag.ErrHelp:
		fs.Usage()
		return err
	case err != nil:
		return usagef("%v (see moerl %s --help)", err, fs.Name())
	}
	return nil
}

// structFlag is a struct field that gets a command-line flag.
type structFlag struct {
	name  string // flag name
	path  string // dotted JSON path of the field
	help  string // the field's help tag
	field reflect.Value
}

// structFlags lists the fields of the struct ptr points to that take a
// flag: exported, with a json name not in skip (names or dotted paths), of
// a kind a flag can parse (int, uint64, float64, bool, string, and slices
// of int, float64 and string). Flags are named after the json name with
// '_' as '-' behind prefix; with sep set, nested structs are walked too and
// their fields named prefix + outer + sep + inner. bindStruct and
// copySetFields agree through it on which fields have flags.
func structFlags(ptr any, prefix, sep string, skip []string) []structFlag {
	var out []structFlag
	var walk func(v reflect.Value, prefix, path string)
	walk = func(v reflect.Value, prefix, path string) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("json"), ",")[0]
			if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
				// An embedded struct's fields are promoted, in JSON and here.
				walk(v.Field(i), prefix, path)
				continue
			}
			if tag == "" || tag == "-" || !f.IsExported() || slices.Contains(skip, tag) || slices.Contains(skip, path+tag) {
				continue
			}
			name := prefix + strings.ReplaceAll(tag, "_", "-")
			fv := v.Field(i)
			switch fv.Kind() {
			case reflect.Int, reflect.Uint64, reflect.Float64, reflect.Bool, reflect.String:
				out = append(out, structFlag{name, path + tag, f.Tag.Get("help"), fv})
			case reflect.Slice:
				switch fv.Type().Elem().Kind() {
				case reflect.Int, reflect.Float64, reflect.String:
					out = append(out, structFlag{name, path + tag, f.Tag.Get("help"), fv})
				}
			case reflect.Struct:
				if sep != "" {
					walk(fv, name+sep, path+tag+".")
				}
			}
		}
	}
	walk(reflect.ValueOf(ptr).Elem(), prefix, "")
	return out
}

// bindStruct registers one flag per field that structFlags lists, so that
// every config field can be set from the command line. A field's help is
// its help tag; what names the struct in the fallback for a field without
// one.
func bindStruct(fs *flag.FlagSet, ptr any, prefix, sep, what string, skip ...string) {
	for _, f := range structFlags(ptr, prefix, sep, skip) {
		usage := f.help
		if usage == "" {
			usage = what + " setting " + f.path + " (undocumented)"
		}
		fs.Var(fieldValue{f.field}, f.name, usage)
	}
}

// fieldValue is a flag.Value writing into a struct field.
type fieldValue struct{ v reflect.Value }

func (x fieldValue) IsBoolFlag() bool { return x.v.IsValid() && x.v.Kind() == reflect.Bool }

// typeName is how help shows the value a flag takes.
func (x fieldValue) typeName() string {
	switch x.v.Kind() {
	case reflect.Bool:
		return ""
	case reflect.Int, reflect.Uint64:
		return "int"
	case reflect.Float64:
		return "float"
	case reflect.Slice:
		return "list"
	}
	return "string"
}

func (x fieldValue) String() string {
	if !x.v.IsValid() {
		return ""
	}
	switch x.v.Kind() {
	case reflect.Slice:
		parts := make([]string, x.v.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(x.v.Index(i).Interface())
		}
		return strings.Join(parts, ",")
	case reflect.Float64:
		return strconv.FormatFloat(x.v.Float(), 'g', -1, 64)
	}
	return fmt.Sprint(x.v.Interface())
}

func (x fieldValue) Set(s string) error {
	switch x.v.Kind() {
	case reflect.Slice:
		var parts []string
		if strings.TrimSpace(s) != "" {
			parts = strings.Split(s, ",")
		}
		out := reflect.MakeSlice(x.v.Type(), len(parts), len(parts))
		for i, p := range parts {
			if err := setScalar(out.Index(i), strings.TrimSpace(p)); err != nil {
				return fmt.Errorf("item %d: %w", i+1, err)
			}
		}
		x.v.Set(out)
		return nil
	}
	return setScalar(x.v, s)
}

func setScalar(v reflect.Value, s string) error {
	switch v.Kind() {
	case reflect.Int:
		n, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return fmt.Errorf("want an integer")
		}
		v.SetInt(n)
	case reflect.Uint64:
		n, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			return fmt.Errorf("want a non-negative integer")
		}
		v.SetUint(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("want a number")
		}
		v.SetFloat(f)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false")
		}
		v.SetBool(b)
	case reflect.String:
		v.SetString(s)
	}
	return nil
}

// setFlags reports which flags were given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// copySetFields copies into dst each field of src (same struct type) whose
// flag, made by bindStruct with prefix and sep, was set on the command
// line: flags override a preset without resetting the fields they do not
// name. A flag of another origin that happens to share a field's name
// (--algo, say) does not count: only fields bindStruct binds are copied.
func copySetFields(fs *flag.FlagSet, dst, src any, prefix, sep string, skip ...string) {
	set := setFlags(fs)
	from := structFlags(src, prefix, sep, skip)
	to := structFlags(dst, prefix, sep, skip)
	for i, f := range from {
		if set[f.name] {
			to[i].field.Set(f.field)
		}
	}
}

// setList collects repeated key=value flags (--set).
type setList []string

func (s *setList) String() string     { return strings.Join(*s, " ") }
func (s *setList) Set(v string) error { *s = append(*s, v); return nil }
