package iscsiconf

import (
	"bufio"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Outcome is what one CUnit test of iscsi-test-cu came to.
type Outcome string

// Outcomes. libiscsi reports a test that does not apply to the logical
// unit (a feature it does not advertise) as passed after a "[SKIPPED]"
// line; those are Skipped here.
const (
	Passed  Outcome = "passed"
	Failed  Outcome = "FAILED"
	Skipped Outcome = "skipped"
)

// Result is one test of one family.
type Result struct {
	Family, Test string
	Outcome      Outcome
	// Detail is the first lines iscsi-test-cu printed for the test (the
	// failed assertions, the reason for a skip), at most maxDetail.
	Detail []string
}

// Name is FAMILY.TEST, as allow-list.txt spells it.
func (r Result) Name() string { return r.Family + "." + r.Test }

const maxDetail = 4

// assertion is a numbered failed assertion CUnit prints after FAILED.
var assertion = regexp.MustCompile(`^[0-9]+\. `)

// parseCUnit reads the verbose output of iscsi-test-cu (its default mode):
//
//	Suite: ProutReserve
//	  Test: Simple ...passed
//	  Test: OwnershipEA ...    [FAILED] PRIN command: failed with sense: …
//	FAILED
//	    1. test_prout_reserve_ownership.c:84  - CU_ASSERT_EQUAL(0,ret)
//	  Test: BlockLimits ...    [SKIPPED] Logical unit is fully provisioned.
//	passed
//
// A test's verdict is the "passed" or "FAILED" that ends the text after
// "Test: NAME ..." (on its line or a later one); the lines in between and
// the numbered assertion failures after a FAILED are its detail.
func parseCUnit(out string) ([]Result, error) {
	var (
		res     []Result
		suite   string
		cur     *Result
		skipped bool
	)
	finish := func(o Outcome) {
		if o == Passed && skipped {
			o = Skipped
		}
		cur.Outcome = o
		res = append(res, *cur)
		cur = nil
	}
	detail := func(s string) {
		s = strings.TrimSpace(s)
		if s == "" {
			return
		}
		r := cur
		if r == nil && len(res) > 0 && res[len(res)-1].Outcome == Failed && assertion.MatchString(s) {
			r = &res[len(res)-1] // the numbered assertions after FAILED
		}
		if r != nil && len(r.Detail) < maxDetail {
			r.Detail = append(r.Detail, s)
		}
	}
	// verdict handles the text after "Test: NAME ..." or a later line of
	// the test: "passed" or "FAILED" ends it, anything else is detail.
	verdict := func(s string) {
		t := strings.TrimSpace(s)
		switch {
		// "passed" may have text after it on its line: what a test's
		// teardown printed (libiscsi 1.19's Reserve6.LUNReset).
		case t == "passed" || strings.HasPrefix(t, "passed "):
			finish(Passed)
		case t == "FAILED" || strings.HasPrefix(t, "FAILED "):
			finish(Failed)
		default:
			if strings.Contains(t, "[SKIPPED]") {
				skipped = true
			}
			detail(t)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "Suite: "):
			suite = strings.TrimSpace(strings.TrimPrefix(t, "Suite: "))
		case strings.HasPrefix(t, "Run Summary:"):
			if cur != nil {
				return res, fmt.Errorf("iscsi-test-cu output ends inside test %s (no verdict)", cur.Name())
			}
			suite = "" // the summary and what follows are no test's detail
		case strings.HasPrefix(t, "Test: "):
			if cur != nil {
				return res, fmt.Errorf("iscsi-test-cu output: test %s has no verdict before the next test", cur.Name())
			}
			if suite == "" {
				return res, fmt.Errorf("iscsi-test-cu output: test before any suite: %q", t)
			}
			name, after, ok := strings.Cut(strings.TrimPrefix(t, "Test: "), " ...")
			if !ok {
				return res, fmt.Errorf("iscsi-test-cu output: unreadable test line %q", t)
			}
			cur, skipped = &Result{Family: suite, Test: name}, false
			verdict(after)
		case cur != nil:
			verdict(line)
		case suite != "":
			detail(line)
		}
	}
	if cur != nil {
		return res, fmt.Errorf("iscsi-test-cu output ends inside test %s (no verdict: did it crash or time out?)", cur.Name())
	}
	return res, sc.Err()
}

const sampleOutput = `
     CUnit - A unit testing framework for C - Version 2.1-3

Suite: ProutReserve
  Test: Simple ...passed
  Test: OwnershipEA ...    [FAILED] PRIN command: failed with sense: SENSE KEY:UNIT_ATTENTION(6) ASCQ:(null)(0x2a04)
FAILED
    1. test_prout_reserve_ownership.c:84  - CU_ASSERT_EQUAL(0,ret)
  Test: OwnershipEAAR ...passed
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. SENSE KEY:UNIT_ATTENTION(6) ASCQ:BUS_RESET(0x2900)

Suite: Inquiry
  Test: BlockLimits ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
passed
  Test: CompareAndWriteAsync ...FAILED
    1. test_multipathio_async_caw.c:45  - CU_ASSERT_EQUAL(atask->sense.key,SCSI_SENSE_MISCOMPARE)
    2. test_multipathio_async_caw.c:46  - CU_ASSERT_EQUAL(atask->sense.ascq,SCSI_SENSE_ASCQ_MISCOMPARE_DURING_VERIFY)
    3. test_multipathio_async_caw.c:45  - CU_ASSERT_EQUAL(atask->sense.key,SCSI_SENSE_MISCOMPARE)
    4. x
    5. y

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      1      1    n/a      0        0
`

func TestParseCUnit(t *testing.T) {
	res, err := parseCUnit(sampleOutput)
	require.NoError(t, err)
	require.Len(t, res, 6)
	assert.Equal(t, Result{Family: "ProutReserve", Test: "Simple", Outcome: Passed}, res[0])
	assert.Equal(t, "ProutReserve.OwnershipEA", res[1].Name())
	assert.Equal(t, Failed, res[1].Outcome)
	require.Len(t, res[1].Detail, 2)
	assert.Contains(t, res[1].Detail[0], "UNIT_ATTENTION")
	assert.Contains(t, res[1].Detail[1], "test_prout_reserve_ownership.c:84")
	assert.Equal(t, Passed, res[2].Outcome)
	assert.Equal(t, Result{Family: "ProutReserve", Test: "LUNReset", Outcome: Passed}, res[3], "text after passed is no verdict of its own")
	assert.Equal(t, Result{Family: "Inquiry", Test: "BlockLimits", Outcome: Skipped, Detail: []string{"[SKIPPED] Logical unit is fully provisioned. Skipping test"}}, res[4])
	assert.Equal(t, Failed, res[5].Outcome)
	assert.Len(t, res[5].Detail, maxDetail, "detail is capped")
	for _, r := range res {
		for _, d := range r.Detail {
			assert.NotContains(t, d, "suites", "the run summary is no test's detail")
		}
	}
}

func TestParseCUnitTruncated(t *testing.T) {
	_, err := parseCUnit("Suite: Read10\n  Test: Simple ...")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Read10.Simple")
	_, err = parseCUnit("  Test: Simple ...passed\n")
	require.ErrorContains(t, err, "before any suite")
}
