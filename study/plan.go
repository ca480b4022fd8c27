package study

import (
	"fmt"
	"path"
	"strconv"

	"github.com/moerl/moerl/moe"
	"github.com/moerl/moerl/run"
)

// Model is one evaluated model of a replicate: its role in the findings
// and the stages that make and evaluate it.
type Model struct {
	// Name is the model's name in reports: "base", "student", "teacher",
	// an algorithm preset, or a KL arm ("grpo-kl0.001").
	Name string
	// Replicate is 1-based; 0 for a model all replicates share (the
	// teacher, unless trained per replicate).
	Replicate int
	Stage     string // the stage that makes it
	EvalStage string // the stage that evaluates it
}

// Plan is a study's stages and its models.
type Plan struct {
	run.Plan
	Models []Model
}

// klName names a KL arm of finding 5.
func klName(coef float64) string {
	return "grpo-kl" + strconv.FormatFloat(coef, 'g', -1, 64)
}

// Seeds of replicate r (1-based): its pretraining seed and its RL seed,
// both from the study's seed, far apart so that no two replicates share a
// stream.
func (c Config) pretrainSeed(r int) uint64 { return c.Recipe.Seed + 1000*uint64(r) }
func (c Config) rlSeed(r int) uint64       { return c.Recipe.Seed + 1000*uint64(r) + 500 }

// evalSettings are the evaluation of every model: the same problems and
// the same random draws in every replicate.
func (c Config) evalSettings() *run.Eval {
	e := c.Recipe.EvalStage()
	e.Problems.Seed = c.Recipe.Seed + 1_000_003
	e.Seed = c.Recipe.Seed
	return e
}

// Build makes the study's plan: per replicate a base model, a student
// distilled from the teacher, every algorithm and both KL arms from the
// base; then an evaluation of every model, scored by its replicate's base
// model for the sharpening measure.
func (c Config) Build() (*Plan, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{}
	add := func(s run.Stage) { p.Stages = append(p.Stages, s) }
	teacher := func(r int) run.Stage {
		tr := c.Recipe
		if r > 0 {
			tr.Seed = c.pretrainSeed(r) + 7
		} else {
			tr.Seed = c.Recipe.Seed + 7
		}
		tr.Model.DModel, tr.Model.ExpertHidden, tr.Model.Layers = c.Teacher.DModel, c.Teacher.ExpertHidden, c.Teacher.Layers
		tr.Pretrain.Steps = c.Teacher.Steps
		tr.Pretrain.Difficulties, tr.Pretrain.Weights = c.Teacher.Difficulties, nil
		if len(tr.Pretrain.Difficulties) == 0 {
			tr.Pretrain.Difficulties = c.Recipe.Pretrain.Difficulties
		}
		name, dir := "teacher", "teacher"
		if r > 0 {
			name, dir = fmt.Sprintf("teacher-r%d", r), path.Join(fmt.Sprintf("r%d", r), "teacher")
		}
		return run.Stage{Name: name, Dir: dir, Kind: "pretrain", What: "the teacher: a larger model, pretrained longer", Settings: tr.PretrainStage()}
	}
	if !c.Teacher.PerReplicate {
		t := teacher(0)
		add(t)
		p.Models = append(p.Models, Model{Name: "teacher", Stage: t.Name})
	}
	for r := 1; r <= c.Replicates; r++ {
		rr := c.Recipe
		rr.Seed = c.pretrainSeed(r)
		rep := fmt.Sprintf("r%d", r)
		stage := func(model string) (name, dir string) {
			return model + "-" + rep, path.Join(rep, model)
		}
		base, baseDir := stage("base")
		add(run.Stage{Name: base, Dir: baseDir, Kind: "pretrain", What: fmt.Sprintf("replicate %d: the base model", r), Settings: rr.PretrainStage()})
		p.Models = append(p.Models, Model{Name: "base", Replicate: r, Stage: base})

		teacherStage := "teacher"
		if c.Teacher.PerReplicate {
			t := teacher(r)
			add(t)
			teacherStage = t.Name
			p.Models = append(p.Models, Model{Name: "teacher", Replicate: r, Stage: t.Name})
		}
		student, studentDir := stage("student")
		add(run.Stage{Name: student, Dir: studentDir, Kind: "distill", What: fmt.Sprintf("replicate %d: the base fine-tuned on the teacher's verified samples", r),
			Inputs: map[string]string{"init": base, "teacher": teacherStage}, Settings: rr.DistillStage()})
		p.Models = append(p.Models, Model{Name: "student", Replicate: r, Stage: student})

		rlRuns := append([]string{}, c.Algos...)
		for _, coef := range c.KL {
			rlRuns = append(rlRuns, klName(coef))
		}
		for i, model := range rlRuns {
			preset := model
			if i >= len(c.Algos) {
				preset = "grpo"
			}
			cfg, err := rr.RLStage(preset)
			if err != nil {
				return nil, err
			}
			cfg.Seed = c.rlSeed(r)
			for _, s := range c.Sets {
				if err := cfg.Algo.Apply(s); err != nil {
					return nil, fmt.Errorf("study: sets %s: %w", s, err)
				}
			}
			if i >= len(c.Algos) {
				cfg.Algo.KLCoef = c.KL[i-len(c.Algos)]
			}
			name, dir := stage(model)
			add(run.Stage{Name: name, Dir: dir, Kind: "rl", What: fmt.Sprintf("replicate %d: %s from the base model", r, model),
				Inputs: map[string]string{"init": base}, Settings: cfg})
			p.Models = append(p.Models, Model{Name: model, Replicate: r, Stage: name})
		}
	}
	// Every model's evaluation, scored by its replicate's base model (the
	// shared teacher by the first replicate's).
	for i, m := range p.Models {
		scorer := "base-r1"
		if m.Replicate > 0 {
			scorer = fmt.Sprintf("base-r%d", m.Replicate)
		}
		dir := m.Stage
		for _, s := range p.Stages {
			if s.Name == m.Stage && s.Dir != "" {
				dir = s.Dir
			}
		}
		name := "eval-" + m.Stage
		add(run.Stage{Name: name, Dir: path.Join(dir, "eval"), Kind: "eval",
			Inputs: map[string]string{"model": m.Stage, "scorer": scorer}, Settings: c.evalSettings()})
		p.Models[i].EvalStage = name
	}
	if err := p.Plan.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// modelConfig is the teacher's model, for reports.
func (c Config) teacherModel() moe.Config {
	m := c.Recipe.Model
	m.DModel, m.ExpertHidden, m.Layers = c.Teacher.DModel, c.Teacher.ExpertHidden, c.Teacher.Layers
	return m
}
