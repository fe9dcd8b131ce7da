package credential

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
)

// memStorage is an in-memory Storage, locks included, as Caddy's storages
// behave: Load of a missing key wraps fs.ErrNotExist, Unlock of a lock
// not held is an error.
type memStorage struct {
	mu    sync.Mutex
	data  map[string][]byte
	locks map[string]chan struct{}
	loads int
}

func newMemStorage() *memStorage {
	return &memStorage{data: map[string][]byte{}, locks: map[string]chan struct{}{}}
}

func (s *memStorage) Lock(ctx context.Context, name string) error {
	for {
		s.mu.Lock()
		held, ok := s.locks[name]
		if !ok {
			s.locks[name] = make(chan struct{})
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *memStorage) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	held, ok := s.locks[name]
	if !ok {
		return fmt.Errorf("unlock %s: not locked", name)
	}
	delete(s.locks, name)
	close(held)
	return nil
}

func (s *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	v, ok := s.data[key]
	if !ok {
		return nil, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	return append([]byte(nil), v...), nil
}

func (s *memStorage) Store(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[key] = append([]byte(nil), value...)
	return nil
}

func (s *memStorage) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.data[key]; !ok {
		return fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	delete(s.data, key)
	return nil
}

// List lists as Caddy's file storage does: not recursive, the keys and
// the folders right under prefix; recursive, every key below it.
func (s *memStorage) List(_ context.Context, prefix string, recursive bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.data {
		rest, ok := strings.CutPrefix(k, prefix+"/")
		if !ok {
			continue
		}
		if child, _, deeper := strings.Cut(rest, "/"); deeper && !recursive {
			if dir := prefix + "/" + child; !slices.Contains(out, dir) {
				out = append(out, dir)
			}
			continue
		}
		out = append(out, k)
	}
	return out, nil
}

// keys lists the stored keys.
func (s *memStorage) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.data {
		out = append(out, k)
	}
	return out
}
