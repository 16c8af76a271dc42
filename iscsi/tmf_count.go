package iscsi

import (
	"sort"
	"sync"
)

// TMFCount is how many task management requests of one function a target
// answered with one response, for status (`mpathfs array status`).
type TMFCount struct {
	Function string `json:"function"` // LOGICAL UNIT RESET, …
	Response string `json:"response"` // Function Complete, …
	Count    int    `json:"count"`
}

type tmfCounts struct {
	mu sync.Mutex
	m  map[[2]uint8]int
}

func (c *tmfCounts) add(fn, resp uint8) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[2]uint8]int{}
	}
	c.m[[2]uint8{fn, resp}]++
}

// TaskManagementCounts lists the task management requests the target
// answered since it started, by function and response, in function code
// order.
func (t *Target) TaskManagementCounts() []TMFCount {
	t.tmfs.mu.Lock()
	keys := make([][2]uint8, 0, len(t.tmfs.m))
	for k := range t.tmfs.m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	out := make([]TMFCount, 0, len(keys))
	for _, k := range keys {
		out = append(out, TMFCount{Function: TMFName(k[0]), Response: TMFResponseName(k[1]), Count: t.tmfs.m[k]})
	}
	t.tmfs.mu.Unlock()
	return out
}
