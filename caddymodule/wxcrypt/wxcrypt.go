// Package wxcrypt verifies and decrypts the messages WeChat pushes to a
// third-party platform (and to apps in safe mode): the msg_signature over
// the message token, timestamp, nonce and ciphertext, and the AES-256-CBC
// envelope keyed by the 43-character EncodingAESKey. It imports no Caddy.
package wxcrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
)

// ErrSignature is returned for a push whose msg_signature does not match.
var ErrSignature = errors.New("msg_signature does not match")

// ErrAppID is returned for a push encrypted for another app.
var ErrAppID = errors.New("the message is for another appid")

// Cipher checks and opens the pushes of one app or platform.
type Cipher struct {
	token string
	key   []byte       // 32 bytes; the IV is its first 16
	block cipher.Block // AES-256 of key; it keeps no state between calls, so it is shared
	appID string
}

// New returns the Cipher of the message token, the EncodingAESKey (43
// characters of base64) and the appid the messages must carry.
func New(token, encodingAESKey, appID string) (*Cipher, error) {
	if token == "" {
		return nil, errors.New("the message token is empty")
	}
	if len(encodingAESKey) != 43 {
		return nil, fmt.Errorf("encoding_aes_key must be 43 characters, got %d", len(encodingAESKey))
	}
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("encoding_aes_key is not the base64 of a 32-byte key")
	}
	if appID == "" {
		return nil, errors.New("the appid is empty")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	return &Cipher{token: token, key: key, block: block, appID: appID}, nil
}

// Signature is WeChat's msg_signature: the hex SHA-1 of the token,
// timestamp, nonce and ciphertext, sorted and concatenated.
func Signature(token, timestamp, nonce, encrypted string) string {
	sum := signatureSum(token, timestamp, nonce, encrypted)
	return hex.EncodeToString(sum[:])
}

// signatureSum is the SHA-1 of the parts, sorted and concatenated.
func signatureSum(parts ...string) [sha1.Size]byte {
	slices.Sort(parts)
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	joined := make([]byte, 0, n)
	for _, p := range parts {
		joined = append(joined, p...)
	}
	return sha1.Sum(joined)
}

// signatureMatches reports, in constant time, whether signature is the
// hex (either case) of sum.
func signatureMatches(sum [sha1.Size]byte, signature string) bool {
	var got [sha1.Size]byte
	if len(signature) != hex.EncodedLen(sha1.Size) {
		return false
	}
	if _, err := hex.Decode(got[:], []byte(signature)); err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(sum[:], got[:]) == 1
}

// Open checks msgSignature and decrypts encrypted (the <Encrypt> element),
// returning the message, which must be for the cipher's appid.
func (c *Cipher) Open(timestamp, nonce, msgSignature, encrypted string) ([]byte, error) {
	if !signatureMatches(signatureSum(c.token, timestamp, nonce, encrypted), msgSignature) {
		return nil, ErrSignature
	}
	plain := make([]byte, base64.StdEncoding.DecodedLen(len(encrypted)))
	n, err := base64.StdEncoding.Decode(plain, []byte(encrypted))
	if err != nil {
		return nil, fmt.Errorf("the ciphertext is not base64: %w", err)
	}
	plain = plain[:n]
	if len(plain) == 0 || len(plain)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("the ciphertext is %d bytes, not whole AES blocks", len(plain))
	}
	cipher.NewCBCDecrypter(c.block, c.key[:aes.BlockSize]).CryptBlocks(plain, plain)
	// PKCS#7 to a block of 32 bytes, as WeChat pads.
	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > 32 || pad > len(plain) || !bytes.Equal(plain[len(plain)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, errors.New("bad padding")
	}
	plain = plain[:len(plain)-pad]
	// 16 random bytes, the message length (4 bytes, big-endian), the
	// message, the appid.
	if len(plain) < 20 {
		return nil, errors.New("the plaintext is too short")
	}
	size := binary.BigEndian.Uint32(plain[16:20])
	if uint64(size) > uint64(len(plain)-20) {
		return nil, errors.New("the message length runs past the plaintext")
	}
	msg, appID := plain[20:20+size], plain[20+size:]
	if subtle.ConstantTimeCompare(appID, []byte(c.appID)) != 1 {
		return nil, ErrAppID
	}
	return msg, nil
}

// PlainSignature is the signature of WeChat's URL check and of plaintext
// pushes: the hex SHA-1 of the token, timestamp and nonce, sorted and
// concatenated.
func PlainSignature(token, timestamp, nonce string) string {
	sum := signatureSum(token, timestamp, nonce)
	return hex.EncodeToString(sum[:])
}

// CheckPlain reports whether signature is PlainSignature's, in constant
// time.
func CheckPlain(token, timestamp, nonce, signature string) bool {
	return signatureMatches(signatureSum(token, timestamp, nonce), signature)
}

// Seal encrypts msg for the cipher's appid as WeChat does (16 random
// bytes, the length, the message, the appid, PKCS#7 to 32 bytes,
// AES-256-CBC) and signs it with timestamp and nonce: a passive reply.
func (c *Cipher) Seal(msg []byte, timestamp, nonce string) (encrypted, signature string, err error) {
	random := make([]byte, 16)
	if _, err := rand.Read(random); err != nil {
		return "", "", fmt.Errorf("random: %w", err)
	}
	plain := make([]byte, 0, 20+len(msg)+len(c.appID)+32)
	plain = append(plain, random...)
	plain = binary.BigEndian.AppendUint32(plain, uint32(len(msg)))
	plain = append(plain, msg...)
	plain = append(plain, c.appID...)
	pad := 32 - len(plain)%32
	plain = append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(c.block, c.key[:aes.BlockSize]).CryptBlocks(plain, plain)
	encrypted = base64.StdEncoding.EncodeToString(plain)
	return encrypted, Signature(c.token, timestamp, nonce, encrypted), nil
}

// Token is the message token the cipher signs with.
func (c *Cipher) Token() string { return c.token }
