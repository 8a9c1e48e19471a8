// Command protojson-reference reads what Go's protojson (the JSON codec behind grpc-gateway)
// makes of request bodies, so the gateway's strict reader is compared with the reference; and,
// asked for a mask, the field mask grpc-gateway's runtime derives from a PATCH body that has none.
//
// Usage: protojson-reference DESCRIPTOR_SET < cases
// Each input line is {"type": "full.message.Name", "body": "<JSON text>"} (with "mask": true, the
// body's field mask is asked for); each output line is
// {"ok": true, "binary": "<base64 of the message's deterministic wire form>"}, {"ok": true,
// "paths": [...]} or {"ok": false, "error": "..."}.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

type input struct {
	Type string `json:"type"`
	Body string `json:"body"`
	Mask bool   `json:"mask"`
}

type output struct {
	OK     bool     `json:"ok"`
	Binary []byte   `json:"binary,omitempty"`
	Paths  []string `json:"paths,omitempty"`
	Error  string   `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: protojson-reference DESCRIPTOR_SET < cases")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var c input
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		found, err := files.FindDescriptorByName(protoreflect.FullName(c.Type))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		message := dynamicpb.NewMessage(found.(protoreflect.MessageDescriptor))
		if c.Mask {
			mask, err := runtime.FieldMaskFromRequestBody(bytes.NewReader([]byte(c.Body)), message)
			if err != nil {
				_ = out.Encode(output{Error: err.Error()})
				continue
			}
			_ = out.Encode(output{OK: true, Paths: mask.GetPaths()})
			continue
		}
		if err := protojson.Unmarshal([]byte(c.Body), message); err != nil {
			_ = out.Encode(output{Error: err.Error()})
			continue
		}
		wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(message)
		if err != nil {
			_ = out.Encode(output{Error: err.Error()})
			continue
		}
		_ = out.Encode(output{OK: true, Binary: wire})
	}
}
