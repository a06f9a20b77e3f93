-- Choose the best live candidate with a free slot and reserve it, atomically.
-- Same order as registry.choice_key: idle first, then
-- sum(reservations) * speed + penalty_seconds, then node id.
--
-- KEYS[1]           set of known node ids
-- KEYS[2i], [2i+1]  state (JSON) and reservations (hash prompt_id -> estimate) of candidate i
-- ARGV[1]           prompt_id: the job's prompt id ({job_id}-{attempt})
-- ARGV[2]           estimate seconds, stored verbatim: Python formats it with repr(), so the
--                   stored text round-trips exactly and Lua never has to format a float
-- ARGV[2i+1], [2i+2] node id and penalty seconds (repr()) of candidate i
--
-- Candidates arrive sorted by node id (Python's code-point order). Only a strictly better
-- candidate replaces the current best, so ties go to the lowest id without comparing
-- strings in Lua, whose '<' follows the server's locale (strcoll).
local prompt_id = ARGV[1]
local best, best_busy, best_score

for i = 1, (#KEYS - 1) / 2 do
  local raw = redis.call('GET', KEYS[2 * i])
  if raw then
    local state = cjson.decode(raw)
    if state.online == true then
      local held_key = KEYS[2 * i + 1]
      -- The prompt_id already holds a slot here: another dispatcher is placing this job,
      -- and only the first may go on (registry.Registry.reserve).
      if redis.call('HEXISTS', held_key, prompt_id) == 1 then
        return nil
      end
      -- HVALS keeps insertion order for small hashes, as Python's dict does, so the sum
      -- below adds the same floats in the same order as choice_key's sum().
      local held = redis.call('HVALS', held_key)
      if #held < state.slots then
        local total = 0
        for _, value in ipairs(held) do
          total = total + tonumber(value)
        end
        local busy = #held > 0
        local score = total * state.speed + tonumber(ARGV[2 * i + 2])
        if best == nil
          or (not busy and best_busy)
          or (busy == best_busy and score < best_score) then
          best, best_busy, best_score = i, busy, score
        end
      end
    end
  end
end

if best == nil then
  return nil
end
redis.call('HSET', KEYS[2 * best + 1], prompt_id, ARGV[2])
-- Re-index the node: the known set may have been lost while its state was not.
redis.call('SADD', KEYS[1], ARGV[2 * best + 1])
return ARGV[2 * best + 1]
