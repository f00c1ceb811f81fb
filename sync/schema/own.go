package schema

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// reshardSchema is where reshard keeps its own objects on a database it
// migrates: DDL capture on a source (the captured-statement table and the
// event triggers' functions), copy and task state on a destination.
const reshardSchema = "reshard"

// ownObject tells whether a dump statement is about one of reshard's own
// objects, which the shards must not get: the reshard schema and what is
// in it, reshard's event triggers (named reshard_ddl_*), and the captured
// statements' table in a publication.
func ownObject(n *pg_query.Node) bool {
	inOwn := func(rv *pg_query.RangeVar) bool { return rv != nil && rv.Schemaname == reshardSchema }
	qualified := func(names []*pg_query.Node) bool {
		return len(names) > 1 && names[0].GetString_().GetSval() == reshardSchema
	}
	switch s := n.Node.(type) {
	case *pg_query.Node_CreateSchemaStmt:
		return s.CreateSchemaStmt.Schemaname == reshardSchema
	case *pg_query.Node_CreateStmt:
		return inOwn(s.CreateStmt.Relation)
	case *pg_query.Node_CreateSeqStmt:
		return inOwn(s.CreateSeqStmt.Sequence)
	case *pg_query.Node_AlterSeqStmt:
		return inOwn(s.AlterSeqStmt.Sequence)
	case *pg_query.Node_AlterTableStmt:
		return inOwn(s.AlterTableStmt.Relation)
	case *pg_query.Node_IndexStmt:
		return inOwn(s.IndexStmt.Relation)
	case *pg_query.Node_CreateFunctionStmt:
		return qualified(s.CreateFunctionStmt.Funcname)
	case *pg_query.Node_CreateEventTrigStmt:
		return strings.HasPrefix(s.CreateEventTrigStmt.Trigname, "reshard_")
	case *pg_query.Node_AlterEventTrigStmt:
		return strings.HasPrefix(s.AlterEventTrigStmt.Trigname, "reshard_")
	case *pg_query.Node_AlterOwnerStmt:
		o := s.AlterOwnerStmt
		if o.ObjectType == pg_query.ObjectType_OBJECT_EVENT_TRIGGER {
			return strings.HasPrefix(o.GetObject().GetString_().GetSval(), "reshard_")
		}
		if o.ObjectType == pg_query.ObjectType_OBJECT_SCHEMA {
			return o.GetObject().GetString_().GetSval() == reshardSchema
		}
		return inOwn(o.Relation) || nodeInOwn(o.Object)
	case *pg_query.Node_CommentStmt:
		if s.CommentStmt.Objtype == pg_query.ObjectType_OBJECT_SCHEMA {
			return s.CommentStmt.GetObject().GetString_().GetSval() == reshardSchema
		}
		return nodeInOwn(s.CommentStmt.Object)
	case *pg_query.Node_GrantStmt:
		for _, o := range s.GrantStmt.Objects {
			if rv := o.GetRangeVar(); inOwn(rv) || o.GetString_().GetSval() == reshardSchema || nodeInOwn(o) {
				return true
			}
		}
	case *pg_query.Node_AlterPublicationStmt:
		for _, o := range s.AlterPublicationStmt.Pubobjects {
			if inOwn(o.GetPublicationObjSpec().GetPubtable().GetRelation()) {
				return true
			}
		}
	}
	return false
}

// nodeInOwn tells whether an object name (a list, a function with
// arguments) is qualified with reshard's schema.
func nodeInOwn(n *pg_query.Node) bool {
	if n == nil {
		return false
	}
	if l := n.GetList(); l != nil {
		return len(l.Items) > 1 && l.Items[0].GetString_().GetSval() == reshardSchema
	}
	if f := n.GetObjectWithArgs(); f != nil {
		return len(f.Objname) > 1 && f.Objname[0].GetString_().GetSval() == reshardSchema
	}
	return false
}

// SplitQualified splits a dotted SQL name (public."Weird; Name") into its
// identifiers, unquoted, folding unquoted ones to lower case as PostgreSQL
// does; for an object identity PostgreSQL wrote, the names it has.
func SplitQualified(s string) []string { return splitQualified(s) }
