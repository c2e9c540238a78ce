//! The store's keyspace and its commands, as a plain function of a command
//! and the current time, so that the replies are tested without a socket.
//! Replies and error texts follow Redis, so that `redis-cli` and client
//! libraries behave as they would against a real server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::resp::Frame;

/// Reported by `INFO`; clients that check a version see a modern one.
const REDIS_VERSION: &str = "7.0.0";

struct Entry {
    value: Bytes,
    expires: Option<Instant>,
}

/// An in-memory keyspace (one database, strings only).
#[derive(Default)]
pub struct Db {
    entries: HashMap<Bytes, Entry>,
}

fn wrong_args(name: &str) -> Frame {
    Frame::err(format!("wrong number of arguments for '{}' command", name.to_ascii_lowercase()))
}

fn not_an_integer() -> Frame {
    Frame::err("value is not an integer or out of range")
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

impl Db {
    /// Runs one command (`args[0]` is its name, any case) at time `now`.
    pub fn execute(&mut self, args: &[Bytes], now: Instant) -> Frame {
        let Some((name, rest)) = args.split_first() else {
            return Frame::err("empty command");
        };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        match (name.as_str(), rest) {
            ("PING", []) => Frame::Simple("PONG".into()),
            ("PING" | "ECHO", [msg]) => Frame::Bulk(msg.clone()),
            ("GET", [key]) => self.get(key, now).map_or(Frame::Null, |v| Frame::Bulk(v.clone())),
            ("SET", [key, value, options @ ..]) => self.set(key, value, options, now),
            ("INCR", [key]) => self.incr_by(key, 1, now),
            ("DECR", [key]) => self.incr_by(key, -1, now),
            ("INCRBY" | "DECRBY", [key, by]) => match parse_i64(by) {
                Some(by) if name == "INCRBY" => self.incr_by(key, by, now),
                Some(by) => by.checked_neg().map_or_else(not_an_integer, |by| self.incr_by(key, by, now)),
                None => not_an_integer(),
            },
            ("DEL" | "EXISTS", keys) if !keys.is_empty() => {
                let mut n = 0;
                for key in keys {
                    if self.get(key, now).is_some() {
                        n += 1;
                        if name == "DEL" {
                            self.entries.remove(key);
                        }
                    }
                }
                Frame::Integer(n)
            }
            ("DBSIZE", []) => {
                self.entries.retain(|_, e| e.expires.is_none_or(|t| t > now));
                Frame::Integer(i64::try_from(self.entries.len()).unwrap_or(i64::MAX))
            }
            ("FLUSHDB" | "FLUSHALL", _) => {
                self.entries.clear();
                Frame::ok()
            }
            ("SELECT", [db]) if &db[..] == b"0" => Frame::ok(),
            ("SELECT", [_]) => Frame::err("DB index is out of range"),
            // redis-cli asks for command docs for its hints; none is a valid answer.
            ("COMMAND", _) => Frame::Array(Vec::new()),
            ("CLIENT", _) => Frame::ok(),
            ("INFO", _) => Frame::Bulk(Bytes::from(format!(
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nweft_example_store:1\r\n"
            ))),
            (
                "PING" | "ECHO" | "GET" | "SET" | "INCR" | "DECR" | "INCRBY" | "DECRBY" | "DEL" | "EXISTS" | "DBSIZE"
                | "SELECT",
                _,
            ) => wrong_args(&name),
            _ => {
                let start: Vec<String> =
                    rest.iter().take(3).map(|a| format!("'{}'", String::from_utf8_lossy(a))).collect();
                Frame::err(format!(
                    "unknown command '{}', with args beginning with: {}",
                    String::from_utf8_lossy(&args[0]),
                    start.join(" ")
                ))
            }
        }
    }

    /// The live value of `key`; an expired entry is removed on the way.
    fn get(&mut self, key: &Bytes, now: Instant) -> Option<&Bytes> {
        if self.entries.get(key).is_some_and(|e| e.expires.is_some_and(|t| t <= now)) {
            self.entries.remove(key);
        }
        self.entries.get(key).map(|e| &e.value)
    }

    fn set(&mut self, key: &Bytes, value: &Bytes, options: &[Bytes], now: Instant) -> Frame {
        let mut expires = None;
        let (mut nx, mut xx) = (false, false);
        let mut options = options.iter();
        while let Some(option) = options.next() {
            match option.to_ascii_uppercase().as_slice() {
                b"NX" => nx = true,
                b"XX" => xx = true,
                unit @ (b"EX" | b"PX") => {
                    let amount = options.next().and_then(|a| parse_i64(a));
                    let Some(amount) = amount.and_then(|a| u64::try_from(a).ok()).filter(|a| *a > 0) else {
                        return Frame::err("invalid expire time in 'set' command");
                    };
                    let ttl = if unit == b"EX" { Duration::from_secs(amount) } else { Duration::from_millis(amount) };
                    expires = now.checked_add(ttl);
                }
                _ => return Frame::err("syntax error"),
            }
        }
        if nx && xx {
            return Frame::err("syntax error");
        }
        let exists = self.get(key, now).is_some();
        if (nx && exists) || (xx && !exists) {
            return Frame::Null;
        }
        self.entries.insert(key.clone(), Entry { value: value.clone(), expires });
        Frame::ok()
    }

    fn incr_by(&mut self, key: &Bytes, by: i64, now: Instant) -> Frame {
        let current = match self.get(key, now) {
            None => 0,
            Some(v) => match parse_i64(v) {
                Some(n) => n,
                None => return not_an_integer(),
            },
        };
        let Some(next) = current.checked_add(by) else {
            return Frame::err("increment or decrement would overflow");
        };
        // INCR keeps the key's time to live, as Redis does.
        let expires = self.entries.get(key).and_then(|e| e.expires);
        self.entries.insert(key.clone(), Entry { value: Bytes::from(next.to_string()), expires });
        Frame::Integer(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(db: &mut Db, now: Instant, line: &str) -> Frame {
        let args: Vec<Bytes> = line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        db.execute(&args, now)
    }

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn commands_answer_like_redis() {
        let mut db = Db::default();
        let now = Instant::now();
        let table: &[(&str, Frame)] = &[
            ("PING", Frame::Simple("PONG".into())),
            ("ping hello", bulk("hello")),
            ("GET k", Frame::Null),
            ("SET k v", Frame::ok()),
            ("get k", bulk("v")),
            ("SET k w NX", Frame::Null),
            ("SET j w XX", Frame::Null),
            ("SET k w XX", Frame::ok()),
            ("INCR k", Frame::err("value is not an integer or out of range")),
            ("INCR n", Frame::Integer(1)),
            ("INCRBY n 41", Frame::Integer(42)),
            ("DECRBY n 2", Frame::Integer(40)),
            ("DECR n", Frame::Integer(39)),
            ("SET big 9223372036854775807", Frame::ok()),
            ("INCR big", Frame::err("increment or decrement would overflow")),
            ("EXISTS k n nope", Frame::Integer(2)),
            ("DEL k nope", Frame::Integer(1)),
            ("DBSIZE", Frame::Integer(2)),
            ("GET", Frame::err("wrong number of arguments for 'get' command")),
            ("SET k v EX 0", Frame::err("invalid expire time in 'set' command")),
            ("SET k v BOGUS", Frame::err("syntax error")),
            ("SELECT 1", Frame::err("DB index is out of range")),
            ("HGET h f", Frame::err("unknown command 'HGET', with args beginning with: 'h' 'f'")),
        ];
        for (line, want) in table {
            assert_eq!(&run(&mut db, now, line), want, "{line}");
        }
    }

    #[test]
    fn keys_expire() {
        let mut db = Db::default();
        let t0 = Instant::now();
        assert_eq!(run(&mut db, t0, "SET k v PX 1500"), Frame::ok());
        assert_eq!(run(&mut db, t0, "INCR c"), Frame::Integer(1));
        assert_eq!(run(&mut db, t0 + Duration::from_millis(1499), "GET k"), bulk("v"));
        assert_eq!(run(&mut db, t0 + Duration::from_millis(1500), "GET k"), Frame::Null);
        assert_eq!(run(&mut db, t0 + Duration::from_secs(2), "DBSIZE"), Frame::Integer(1));
    }
}
