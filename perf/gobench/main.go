// gobench: the nats.go client's own benchmark loop (the old nats-bench
// example on nats.go's bench package), to check `petrel bench` against a Go
// client on the same shapes. Build (Debian: golang-go and
// golang-github-nats-io-go-nats-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o target/gobench ./perf/gobench
//
// Usage: gobench -s nats://127.0.0.1:4222 -np 1 -ns 8 -n 500000 -ms 16 SUBJECT
// Prints nats.go bench's report, then one JSON line with the rates.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/bench"
)

func main() {
	urls := flag.String("s", nats.DefaultURL, "server URLs, comma separated")
	numPubs := flag.Int("np", 1, "publishers")
	numSubs := flag.Int("ns", 0, "subscribers")
	numMsgs := flag.Int("n", 100000, "messages in total")
	msgSize := flag.Int("ms", 128, "payload size")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: gobench [flags] SUBJECT")
	}
	subj := flag.Arg(0)
	opts := nats.GetDefaultOptions()
	opts.Servers = strings.Split(*urls, ",")
	bm := bench.NewBenchmark("NATS", *numSubs, *numPubs)
	var startwg, donewg sync.WaitGroup
	donewg.Add(*numPubs + *numSubs)
	startwg.Add(*numSubs)
	for i := 0; i < *numSubs; i++ {
		nc, err := opts.Connect()
		if err != nil {
			log.Fatalf("connect: %v", err)
		}
		go runSubscriber(bm, nc, subj, &startwg, &donewg, *numMsgs, *msgSize)
	}
	startwg.Wait()
	startwg.Add(*numPubs)
	counts := bench.MsgsPerClient(*numMsgs, *numPubs)
	for i := 0; i < *numPubs; i++ {
		nc, err := opts.Connect()
		if err != nil {
			log.Fatalf("connect: %v", err)
		}
		go runPublisher(bm, nc, subj, &startwg, &donewg, counts[i], *msgSize)
	}
	startwg.Wait()
	donewg.Wait()
	bm.Close()
	fmt.Print(bm.Report())
	out := map[string]float64{}
	if *numPubs > 0 {
		out["pub_rate"] = float64(bm.Pubs.Rate())
	}
	if *numSubs > 0 {
		out["sub_rate"] = float64(bm.Subs.Rate())
	}
	j, _ := json.Marshal(out)
	fmt.Println(string(j))
}

func runPublisher(bm *bench.Benchmark, nc *nats.Conn, subj string, startwg, donewg *sync.WaitGroup, n, size int) {
	startwg.Done()
	msg := make([]byte, size)
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := nc.Publish(subj, msg); err != nil {
			log.Fatalf("publish: %v", err)
		}
	}
	if err := nc.Flush(); err != nil {
		log.Fatalf("flush: %v", err)
	}
	bm.AddPubSample(bench.NewSample(n, size, start, time.Now(), nc))
	nc.Close()
	donewg.Done()
}

func runSubscriber(bm *bench.Benchmark, nc *nats.Conn, subj string, startwg, donewg *sync.WaitGroup, n, size int) {
	received := 0
	ch := make(chan time.Time, 2)
	sub, err := nc.Subscribe(subj, func(msg *nats.Msg) {
		received++
		if received == 1 {
			ch <- time.Now()
		}
		if received == n {
			ch <- time.Now()
		}
	})
	if err != nil {
		log.Fatalf("subscribe: %v", err)
	}
	sub.SetPendingLimits(-1, -1)
	nc.Flush()
	startwg.Done()
	start := <-ch
	end := <-ch
	bm.AddSubSample(bench.NewSample(n, size, start, end, nc))
	nc.Close()
	donewg.Done()
}
