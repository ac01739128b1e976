-- bench/tokens.sh: the floor of a read, a round trip and an empty
-- transaction.
SELECT 1;
