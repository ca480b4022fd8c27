package algo

import (
	"fmt"
	"slices"
)

// The parts of an algorithm are registered here, one entry per name, in
// the manner of verl's register_adv_est and register_policy_loss
// (verl/trainer/ppo/core_algos.py): each enum field of Config (advantage,
// kl_placement, kl_estimator, policy_loss, aggregation, reward_scheme,
// reward_control, rollout_correction, rollout_precision, short_batch) has
// a kind, and each of its values is one part registered in an init
// function next to the code that implements it. The allowed values of the field (Allowed, Set,
// Validate), its help (Parts), the checks the part makes of the settings
// it reads, and the traits other parts ask about (is the advantage one per
// response? is the policy term a loss per response?) all come from that
// entry. Adding a part is writing its function and registering it; an
// exported constant for Go callers is optional.

// A part is one registered value of an enum field of Config.
type part[F any] struct {
	name string // the value, as written in a Config
	doc  string // one line for help: what it is and where it comes from
	fn   F      // what the kind's caller runs
	is   traits
	// check, when set, reports the settings that are wrong for this part
	// (each as "key: problem"); Validate runs it when the part is chosen.
	check func(c Config) []string
}

// traits are the properties of a part that other parts and Validate ask
// about. Each kind says which it sets.
type traits struct {
	// sequence: an advantage estimator gives one Â per response, the same
	// on each of its tokens; a policy term is one loss per response; a
	// rollout correction gives one weight per response.
	sequence bool
	// grouped: an advantage estimator compares the responses to one prompt,
	// so it needs Batch.Groups and a group size of at least 2.
	grouped bool
	// values: an advantage estimator reads the critic's Batch.OldValues.
	values bool
}

// kind is the registry of one enum field of Config.
type kind[F any] struct {
	key   string // the field's JSON name
	empty string // the part an empty value stands for; "" when the field must be set
	parts []part[F]
}

// enumKind is what Set, Validate, Allowed and Parts need of a kind,
// whatever its function type.
type enumKind interface {
	names() []string
	infos() []PartInfo
	valid(value string) bool
	problems(c Config, value string) []string
}

// kinds maps each enum field's JSON name to its registry.
var kinds = map[string]enumKind{}

func newKind[F any](key, empty string) *kind[F] {
	k := &kind[F]{key: key, empty: empty}
	kinds[key] = k
	return k
}

// register adds parts to the kind. A repeated or empty name is a
// programming error in this package, caught when it starts.
func (k *kind[F]) register(parts ...part[F]) {
	for _, p := range parts {
		if p.name == "" || slices.ContainsFunc(k.parts, func(q part[F]) bool { return q.name == p.name }) {
			panic(fmt.Sprintf("algo: %s part %q registered twice or without a name", k.key, p.name))
		}
		k.parts = append(k.parts, p)
	}
}

// get returns the part of the given name; an empty name is the kind's
// default, if it has one.
func (k *kind[F]) get(name string) (part[F], bool) {
	if name == "" {
		name = k.empty
	}
	for _, p := range k.parts {
		if p.name == name {
			return p, true
		}
	}
	return part[F]{}, false
}

// must returns the named part, or the zero part (no function, no traits)
// for a name Validate would reject.
func (k *kind[F]) must(name string) part[F] {
	p, _ := k.get(name)
	return p
}

func (k *kind[F]) names() []string {
	names := make([]string, len(k.parts))
	for i, p := range k.parts {
		names[i] = p.name
	}
	return names
}

// namesWhere returns the names of the parts for which keep is true.
func (k *kind[F]) namesWhere(keep func(part[F]) bool) []string {
	var names []string
	for _, p := range k.parts {
		if keep(p) {
			names = append(names, p.name)
		}
	}
	return names
}

func (k *kind[F]) infos() []PartInfo {
	infos := make([]PartInfo, len(k.parts))
	for i, p := range k.parts {
		infos[i] = PartInfo{Name: p.name, Doc: p.doc}
	}
	return infos
}

func (k *kind[F]) valid(value string) bool {
	_, ok := k.get(value)
	return ok
}

func (k *kind[F]) problems(c Config, value string) []string {
	p, ok := k.get(value)
	if !ok || p.check == nil {
		return nil
	}
	return p.check(c)
}

// PartInfo describes one registered part, for a command line's help.
type PartInfo struct {
	Name string // the value to write in the Config field
	Doc  string // what the part is and where it comes from
}

// Allowed returns the values the Config field with JSON name key accepts,
// in registration order, or nil when key is not an enum field. Validate
// also takes an empty value for a field with a default (reward_control,
// rollout_correction: "none"), so that a Config saved before the field
// existed still loads; Set takes only the listed values.
func Allowed(key string) []string {
	if k, ok := kinds[key]; ok {
		return k.names()
	}
	return nil
}

// Parts returns the registered parts of the enum field with JSON name key,
// with their one-line docs, or nil when key is not an enum field.
func Parts(key string) []PartInfo {
	if k, ok := kinds[key]; ok {
		return k.infos()
	}
	return nil
}

// EnumKeys returns the JSON names of Config's enum fields, in declaration
// order.
func EnumKeys() []string {
	var keys []string
	for _, f := range configFields {
		if _, ok := kinds[f.name]; ok {
			keys = append(keys, f.name)
		}
	}
	return keys
}
