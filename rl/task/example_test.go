package task_test

import (
	"fmt"

	"github.com/moerl/moerl/rl/task"
)

// Generate a reproducible set of problems and check answers to them.
func ExampleGenerateSet() {
	add, err := task.Get("add")
	if err != nil {
		panic(err)
	}
	for _, p := range task.GenerateSet(add, 1, 2, []int{3}) {
		fmt.Println(p.Prompt, p.Answer)
		for _, answer := range []string{p.Answer, "0" + p.Answer} {
			ok, why := add.Verify(p, answer)
			fmt.Printf("  %q: %v, %s\n", answer, ok, why)
		}
	}
	// Output:
	// add 89+218=? 307
	//   "307": true, correct
	//   "0307": false, "0307" has a leading zero
	// add 3+122=? 125
	//   "125": true, correct
	//   "0125": false, "0125" has a leading zero
}

// Answers that mean the same share a canonical form, in which they vote
// in maj@k.
func ExampleTask_canonical() {
	kk, _ := task.Get("kk")
	p := task.Problem{Task: "kk", Prompt: "kk a: a and b differ. b: a and b differ."}
	for _, answer := range []string{"a knave,b knave", "b knave, a knave", "a knight,b knave"} {
		ok, _ := kk.Verify(p, answer)
		fmt.Printf("%q → %q, correct %v\n", answer, kk.Canonical(p, answer), ok)
	}
	cd, _ := task.Get("countdown")
	q := task.Problem{Task: "countdown", Prompt: "countdown 8 6 4 to 12", Answer: "8*6/4"}
	for _, answer := range []string{"(6/4)*8", "6*8/4", "8/6*4"} {
		ok, _ := cd.Verify(q, answer)
		fmt.Printf("%q → %q, correct %v\n", answer, cd.Canonical(q, answer), ok)
	}
	// Output:
	// "a knave,b knave" → "a knave,b knave", correct true
	// "b knave, a knave" → "a knave,b knave", correct true
	// "a knight,b knave" → "a knight,b knave", correct false
	// "(6/4)*8" → "8*6/4", correct true
	// "6*8/4" → "8*6/4", correct true
	// "8/6*4" → "16/3", correct false
}
