"""The limiter's Redis side: one Lua script per decision, so each is atomic however many
processes share the Redis (never INCR then EXPIRE); `dupify.limits.counters` does the same in
process. Each counter gets its TTL in the same step that creates it."""

# KEYS[1] counter; ARGV: amount, window in ms. INCRBY and the TTL in one atomic step; the TTL is
# set whenever the key has none, so no counter can outlive its window.
HIT_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {count, ttl}
"""

# KEYS[1] counter; ARGV: limit, window in ms. Adds one only while the count is under the limit:
# {1, count, ttl} taken, {0, count, ttl} refused (nothing added).
TAKE_SCRIPT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then return {0, count, redis.call('PTTL', KEYS[1])} end
count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {1, count, ttl}
"""

# KEYS[1] counter. Gives back one `take`, never below zero; a counter gone with its window stays
# gone (giving back must not open a window of its own).
GIVE_BACK_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local count = redis.call('DECR', KEYS[1])
if count < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') count = 0 end
return count
"""

# KEYS[1] month counter (a hash: used, generation); ARGV: images, limit, seed ('' = none yet),
# ttl in ms, the generation a seed creates. Returns {-1, 0, ''}: the counter is missing and the
# caller must seed it; {0, used, generation}: refused; {1, used, generation}: reserved. A seed
# is written only if the counter is still missing (first seeder wins).
RESERVE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[3] == '' then return {-1, 0, ''} end
  redis.call('HSET', KEYS[1], 'used', ARGV[3], 'generation', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local used = tonumber(redis.call('HGET', KEYS[1], 'used'))
local generation = redis.call('HGET', KEYS[1], 'generation')
local images = tonumber(ARGV[1])
if used + images > tonumber(ARGV[2]) then return {0, used, generation} end
used = redis.call('HINCRBY', KEYS[1], 'used', images)
return {1, used, generation}
"""

# KEYS[1] month counter; ARGV: images (negative to give back), generation. Only a counter of
# that generation holds the reservations being adjusted; any other (or none) is left alone.
ADJUST_SCRIPT = """
if redis.call('HGET', KEYS[1], 'generation') ~= ARGV[2] then return 0 end
redis.call('HINCRBY', KEYS[1], 'used', ARGV[1])
return 1
"""

# KEYS[1] counter, KEYS[2] a token (the key cache's revocation signal, dupify.keys.signal);
# ARGV: amount, window in ms, a fresh token, the token's TTL in ms. HIT_SCRIPT's count and the
# token in one round trip: {count, ttl, token}. A missing token is created from the fresh one,
# so a Redis that lost its keys gives every cache a token it never saw.
HIT_READING_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
local token = redis.call('GET', KEYS[2])
if not token then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  token = ARGV[3]
end
return {count, ttl, token}
"""

# KEYS[1] a token; ARGV: a fresh token, its TTL in ms. The token, created when missing.
READ_SIGNAL_SCRIPT = """
local token = redis.call('GET', KEYS[1])
if not token then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  token = ARGV[1]
end
return token
"""
